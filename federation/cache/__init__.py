"""The exam cache: the interface, the in-memory cache and the Elasticsearch cache."""

from federation.cache.base import CachedAnswer, CacheHealth, ExamCache, MemoryExamCache, document_id
from federation.cache.elasticsearch import ElasticsearchExamCache, answer_id, exam_document

__all__ = [
    "CacheHealth",
    "CachedAnswer",
    "ElasticsearchExamCache",
    "ExamCache",
    "MemoryExamCache",
    "answer_id",
    "document_id",
    "exam_document",
]
