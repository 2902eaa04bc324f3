"""Bounds on one GraphQL document, checked before it runs: tokens, depth, aliases, fields.

:class:`DocumentChecker` is the one gate HTTP and WebSocket share:

1. ``parse`` with a token, comment and length limit (graphql-core stops lexing at the limit, and
   reports a document nested too deeply for its recursive parser as a syntax error);
2. :class:`QueryLimitsRule` alone, so a deep or huge document is refused before the standard
   rules (some of them recursive, some quadratic) look at it;
3. graphql-core's specified rules, without "Did you mean …?" suggestions, plus
   :class:`NoIntrospectionRule` in production (``__typename`` stays allowed, and so does
   ``__type(name: …) { name }``, which tells whether a type exists and nothing more).

Every error of steps 2 and 3 carries a code: its own (``QUERY_TOO_DEEP``, …) or
``GRAPHQL_VALIDATION_FAILED``.

The limit walk follows fragment spreads (each spread counts again, as execution would run it),
skips a spread already on the current path (a cycle, which ``NoFragmentCyclesRule`` reports),
and stops as soon as a limit is passed, so a fragment bomb costs at most the limit.
``__schema`` and ``__type`` subtrees are not measured (introspection is bounded by the schema
itself, and refused in production); their aliases still count.
Aliases count on every operation type: a mutation with 15 aliases is 15 attempts.
"""

from __future__ import annotations

import collections
from typing import Any, ClassVar

import graphene
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    parse,
    specified_rules,
    validate,
)
from graphql.error import GraphQLSyntaxError
from graphql.validation import ASTValidationRule

from federation.settings import ServerSettings
from federation.settings_security import GraphqlLimits

__all__ = ["DocumentChecker", "NoIntrospectionRule", "QueryLimitsRule", "limits_rule"]

_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
_TYPE_PROBE_FIELDS = frozenset({"name", "__typename"})
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
"""The code of a validation error that has no code of its own."""


class NoIntrospectionRule(NoSchemaIntrospectionCustomRule):
    """No introspection (production), except ``__type(name: …)`` selecting only ``name``.

    That probe says whether a type of that name exists, which the published ``schema.graphql``
    says anyway; it is what GraphQL-over-HTTP clients and graphql-http's ``auditServer`` send
    to check that variables work. Fields, arguments and descriptions stay hidden.
    """

    def enter_field(self, node: FieldNode, *args: Any) -> None:
        """Refuse a field of an introspection type, unless it is the type-name probe."""
        selections = node.selection_set.selections if node.selection_set is not None else ()
        if (
            node.name.value == "__type"
            and selections
            and all(isinstance(s, FieldNode) and s.name.value in _TYPE_PROBE_FIELDS for s in selections)
        ):
            return
        super().enter_field(node, *args)


def _coded(error: GraphQLError) -> GraphQLError:
    """``error`` with ``extensions.code``: its own, or ``GRAPHQL_VALIDATION_FAILED``."""
    if isinstance((error.extensions or {}).get("code"), str):
        return error
    extensions = {**(error.extensions or {}), "code": VALIDATION_FAILED}
    return GraphQLError(
        error.message, error.nodes, error.source, error.positions, error.path, None, extensions
    )


class QueryLimitsRule(ValidationRule):
    """Refuses an operation deeper, with more aliases or with more fields than ``limits`` allow.

    Use :func:`limits_rule` for a rule class bound to given limits; the error codes are
    ``QUERY_TOO_DEEP``, ``TOO_MANY_ALIASES`` and ``TOO_MANY_FIELDS``.
    """

    limits: ClassVar[GraphqlLimits] = GraphqlLimits()

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> Any:
        """Measure one operation, fragments expanded; report each limit it passes."""
        limits = self.limits
        depth = aliases = fields = steps = 0
        max_steps = 20 * limits.max_fields + 1000
        stack: list[tuple[SelectionSetNode, int, frozenset[str]]] = [(node.selection_set, 0, frozenset())]
        while stack:
            selection_set, level, on_path = stack.pop()
            for selection in selection_set.selections:
                steps += 1
                if isinstance(selection, FieldNode):
                    if selection.alias is not None:
                        aliases += 1
                    if level == 0 and selection.name.value in _INTROSPECTION_ROOTS:
                        continue
                    fields += 1
                    depth = max(depth, level + 1)
                    if selection.selection_set is not None:
                        stack.append((selection.selection_set, level + 1, on_path))
                elif isinstance(selection, InlineFragmentNode):
                    stack.append((selection.selection_set, level, on_path))
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.context.get_fragment(name)
                    if fragment is not None and name not in on_path:
                        stack.append((fragment.selection_set, level, on_path | {name}))
            if (
                depth > limits.max_depth
                or aliases > limits.max_aliases
                or fields > limits.max_fields
                or steps > max_steps
            ):
                break
        if depth > limits.max_depth:
            self._refuse(node, f"The operation is nested deeper than {limits.max_depth}.", "QUERY_TOO_DEEP")
        if aliases > limits.max_aliases:
            self._refuse(
                node, f"The operation has more than {limits.max_aliases} aliases.", "TOO_MANY_ALIASES"
            )
        if fields > limits.max_fields or steps > max_steps:
            self._refuse(
                node, f"The operation selects more than {limits.max_fields} fields.", "TOO_MANY_FIELDS"
            )
        return self.SKIP

    def _refuse(self, node: OperationDefinitionNode, message: str, code: str) -> None:
        self.report_error(GraphQLError(message, node, extensions={"code": code}))


def limits_rule(limits: GraphqlLimits) -> type[QueryLimitsRule]:
    """A :class:`QueryLimitsRule` bound to ``limits``."""
    return type("QueryLimitsRule", (QueryLimitsRule,), {"limits": limits})


_REMEMBERED_DOCUMENTS = 256
_REMEMBERED_MAX_LENGTH = 8192


class DocumentChecker:
    """Parses and validates documents for one schema under one server's settings."""

    def __init__(self, schema: graphene.Schema, server: ServerSettings) -> None:
        self.schema = schema.graphql_schema
        self.limits = server.graphql
        self.production = server.mode == "production"
        self._limit_rules: list[type[ASTValidationRule]] = [limits_rule(server.graphql)]
        self._rules: list[type[ASTValidationRule]] = list(specified_rules)
        if self.production:
            self._rules.append(NoIntrospectionRule)
        self._valid: collections.OrderedDict[str, DocumentNode] = collections.OrderedDict()

    def check(self, query: str) -> DocumentNode | list[GraphQLError]:
        """The parsed document, or the errors that stop it from running.

        Valid documents are remembered (a few hundred, least recently used out): clients such as
        an EHR send the same few query texts over and over, and validating one costs more than
        answering it from the cache.
        """
        known = self._valid.get(query)
        if known is not None:
            self._valid.move_to_end(query)
            return known
        checked = self._check(query)
        if not isinstance(checked, list) and len(query) <= _REMEMBERED_MAX_LENGTH:
            self._valid[query] = checked
            if len(self._valid) > _REMEMBERED_DOCUMENTS:
                self._valid.popitem(last=False)
        return checked

    def _check(self, query: str) -> DocumentNode | list[GraphQLError]:
        try:
            document = parse(
                query,
                max_lexical_tokens=self.limits.max_tokens,
                max_comments=self.limits.max_tokens,
                max_source_length=self.limits.max_body_bytes,
            )
        except GraphQLSyntaxError as exc:
            return [exc]
        try:
            errors = validate(self.schema, document, self._limit_rules, max_errors=10)
            if not errors:
                errors = validate(self.schema, document, self._rules, max_errors=20, hide_suggestions=True)
        except RecursionError:
            errors = [
                GraphQLError("The document is nested too deeply.", extensions={"code": "QUERY_TOO_DEEP"})
            ]
        return [_coded(e) for e in errors] or document
