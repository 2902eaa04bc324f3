"""A renderer of the kustomize subset deploy/kubernetes/ uses, so CI renders it without the kustomize binary.

Supported: ``resources`` (files, or folders holding a kustomization.yaml), ``namespace``,
``images`` (``newName``, ``newTag``) and ``patches`` given as a ``path`` to a JSON 6902 patch
(RFC 6902: add, replace, remove) with a ``target`` of ``kind`` and ``name``. Anything else in a
kustomization.yaml is an error, not ignored: a manifest using more of kustomize than this renders
must extend this module (and its test) first. ``kubectl kustomize`` renders the same folders.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CLUSTER_SCOPED", "KustomizeError", "apply_json_patch", "build"]

_KEYS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "PriorityClass"}
)

Manifest = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render, or a patch that does not apply."""


def _tokens(pointer: str) -> list[str]:
    if not pointer.startswith("/"):
        raise KustomizeError(f"JSON pointer {pointer!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _parent(document: Any, tokens: list[str], pointer: str) -> Any:
    node = document
    for token in tokens[:-1]:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise KustomizeError(f"path {pointer} does not exist") from exc
    return node


def apply_json_patch(document: Manifest, operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add``, ``replace`` and ``remove`` operations in place; a missing path is an error."""
    for operation in operations:
        op, pointer = operation["op"], operation["path"]
        tokens = _tokens(pointer)
        parent, last = _parent(document, tokens, pointer), tokens[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, copy.deepcopy(operation["value"]))
                continue
            if not 0 <= index < len(parent):
                raise KustomizeError(f"path {pointer} does not exist")
        elif op != "add" and last not in parent:
            raise KustomizeError(f"path {pointer} does not exist")
        if op in {"add", "replace"}:
            parent[index if isinstance(parent, list) else last] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del parent[index if isinstance(parent, list) else last]
        else:
            raise KustomizeError(f"patch operation {op!r} is not supported here")


def _matches(manifest: Manifest, target: dict[str, str]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise KustomizeError(f"patch target keys {sorted(unknown)} are not supported here")
    return manifest.get("kind") == target.get("kind", manifest.get("kind")) and manifest["metadata"][
        "name"
    ] == target.get("name", manifest["metadata"]["name"])


def _pod_specs(manifest: Manifest) -> list[dict[str, Any]]:
    template = manifest.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []


def _set_images(manifests: list[Manifest], images: list[dict[str, str]]) -> None:
    for image in images:
        for manifest in manifests:
            for pod in _pod_specs(manifest):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def build(directory: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize directory`` renders, for the supported subset."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - _KEYS
    if unknown:
        raise KustomizeError(f"{directory}: kustomization keys {sorted(unknown)} are not supported here")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            manifests += build(path)
        else:
            manifests += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path", "target"}:
            raise KustomizeError(f"{directory}: only patches with a path and a target are supported here")
        operations = yaml.safe_load((directory / patch["path"]).read_text(encoding="utf-8"))
        targets = [manifest for manifest in manifests if _matches(manifest, patch["target"])]
        if not targets:
            raise KustomizeError(f"{directory}: patch {patch['path']} matches no resource")
        for manifest in targets:
            apply_json_patch(manifest, operations)
    _set_images(manifests, kustomization.get("images", []))
    if "namespace" in kustomization:
        for manifest in manifests:
            if manifest["kind"] not in CLUSTER_SCOPED:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    return manifests
