"""The exam cache: the interface, the in-memory cache and the Elasticsearch cache."""

from federation.cache._indices import CacheIndexStats
from federation.cache.base import CachedAnswer, CacheHealth, ExamCache, MemoryExamCache, document_id
from federation.cache.elasticsearch import ElasticsearchExamCache, answer_id, exam_document

__all__ = [
    "CacheHealth",
    "CacheIndexStats",
    "CachedAnswer",
    "ElasticsearchExamCache",
    "ExamCache",
    "MemoryExamCache",
    "answer_id",
    "document_id",
    "exam_document",
]
