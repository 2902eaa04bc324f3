"""The audit trail: records, the local journal, its clock, sinks (Elasticsearch, syslog) and the flood gate."""

from federation.audit.clock import ClockWatch, SegmentSpan, Timeline
from federation.audit.elasticsearch import ElasticsearchAuditSink, audit_document
from federation.audit.flood import FloodGate, Suppressed
from federation.audit.journal import AuditJournal, Position
from federation.audit.lists import audit_id, capped, in_parts, returned_patient_ids
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, AuditTrail, newest_page, page_key
from federation.audit.sink import AuditSink, MemoryAuditSink, bare_id, matches, newest_first, patient_forms
from federation.audit.syslog_sink import (
    SyslogAuditSink,
    audit_message,
    octet_counted,
    syslog_message,
    tls_context,
)
from federation.audit.trail import JournaledAuditTrail, build_audit_trail

__all__ = [
    "AuditAction",
    "AuditJournal",
    "AuditOutcome",
    "AuditRecord",
    "AuditSink",
    "AuditTrail",
    "ClockWatch",
    "ElasticsearchAuditSink",
    "FloodGate",
    "JournaledAuditTrail",
    "MemoryAuditSink",
    "Position",
    "SegmentSpan",
    "Suppressed",
    "SyslogAuditSink",
    "Timeline",
    "audit_document",
    "audit_id",
    "audit_message",
    "bare_id",
    "build_audit_trail",
    "capped",
    "in_parts",
    "matches",
    "newest_first",
    "newest_page",
    "octet_counted",
    "page_key",
    "patient_forms",
    "returned_patient_ids",
    "syslog_message",
    "tls_context",
]
