"""The exam cache: the interface, the in-memory cache and the Elasticsearch cache."""

from federation.cache.base import CachedAnswer, CacheHealth, ExamCache, MemoryExamCache, document_id
from federation.cache.elasticsearch import ElasticsearchExamCache

__all__ = [
    "CacheHealth",
    "CachedAnswer",
    "ElasticsearchExamCache",
    "ExamCache",
    "MemoryExamCache",
    "document_id",
]
