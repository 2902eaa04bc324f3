"""The GraphQL front end: types, thin resolvers over the engine, and the HTTP handler."""

from schema.http import GraphQLHandler
from schema.query import Query, build_schema

__all__ = ["GraphQLHandler", "Query", "build_schema"]
