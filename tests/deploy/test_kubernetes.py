"""deploy/kubernetes/: every overlay rendered and validated against the Kubernetes schemas offline, and what the manifests promise."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.dockerfile import words
from deploy.image import REPO, final_stage
from deploy.kustomize import KustomizeError, apply_json_patch, build
from federation.settings import load_settings

KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent for p in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes release still common in hospitals' clusters, and the newest the schemas know."""
KINDS = {
    "ConfigMap",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
    "StatefulSet",
}
Manifest = dict[str, Any]


def _one(manifests: list[Manifest], kind: str, name: str = "pacsfed") -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module", params=[p.name for p in OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    return build(KUBERNETES / "overlays" / request.param)


def test_there_are_overlays_for_the_environments() -> None:
    assert {p.name for p in OVERLAYS} == {"production", "staging"}


def test_the_renderer_applies_json_patches_and_refuses_what_it_does_not_render(tmp_path: Path) -> None:
    document: Manifest = {"spec": {"replicas": 2, "list": [1, 2]}}
    apply_json_patch(
        document,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "remove", "path": "/spec/list/0"},
            {"op": "add", "path": "/spec/a~1b", "value": True},
        ],
    )
    assert document == {"spec": {"replicas": 3, "list": [2, 3], "a/b": True}}
    with pytest.raises(KustomizeError, match="does not exist"):
        apply_json_patch(document, [{"op": "replace", "path": "/spec/missing", "value": 1}])
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="configMapGenerator"):
        build(tmp_path)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    rendered: list[Manifest], version: str
) -> None:
    assert {m["kind"] for m in rendered} == KINDS
    for manifest in rendered:
        kubernetes_validate.validate(manifest, version, strict=True)  # raises ValidationError
        assert manifest["metadata"]["namespace"], "the overlay sets the namespace"


def test_the_pods_run_the_images_command_with_probes_requests_and_the_images_user(
    rendered: list[Manifest],
) -> None:
    workload = _one(rendered, "StatefulSet")
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = final_stage()
    assert container["args"] == words(image.last("CMD") or "")
    assert container["image"].startswith("registry.example.org/pacsfed:")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert str(pod["securityContext"]["runAsUser"]) == (image.last("USER") or "").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    labels = pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for manifest in (m for m in rendered if m["kind"] == kind):
            selector = manifest["spec"].get("selector") or manifest["spec"]["podSelector"]
            assert selector.get("matchLabels", selector).items() <= pod_labels.items(), kind
    hpa = _one(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "pacsfed",
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_audit_journal_lives_on_the_pods_own_persistent_volume(rendered: list[Manifest]) -> None:
    workload = _one(rendered, "StatefulSet")
    (claim,) = workload["spec"]["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    config = yaml.safe_load(_one(rendered, "ConfigMap")["data"]["pacsfed.yaml"])
    journal = Path(config["audit"]["journal_dir"])
    assert journal.is_relative_to(mounts[claim["metadata"]["name"]])
    assert workload["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_egress_goes_only_to_dns_elasticsearch_the_pacs_and_the_identity_provider(
    rendered: list[Manifest],
) -> None:
    policy = _one(rendered, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    allowed: set[int] = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), "a rule without peers or ports allows everything"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert network.prefixlen >= 16, f"{network}: a PACS or IdP range, not the internet"
        allowed |= {port["port"] for port in rule["ports"]}
    assert allowed == {53, 9200, 104, 11112, 443}


def test_the_configmaps_configuration_loads_with_the_secrets_variables(
    rendered: list[Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pacsfed.yaml"
    config.write_text(_one(rendered, "ConfigMap")["data"]["pacsfed.yaml"], encoding="utf-8")
    secret = _one(rendered, "Secret")
    for key, value in secret["stringData"].items():
        assert key.startswith("PACSFED_"), key
        monkeypatch.setenv(key, value)
    settings = load_settings(config)
    assert settings.cache.backend == "elasticsearch" and settings.cache.url.startswith("https://")
    assert settings.cache.api_key is not None, "the Secret's key reaches the settings"
    assert settings.auth.mode == "jwt", "pacsfed serve refuses no authentication"
    workload = _one(rendered, "StatefulSet")
    mounts = [m["mountPath"] for m in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]]
    assert settings.cache.tls is not None and settings.cache.tls.ca_file is not None
    assert any(Path(settings.cache.tls.ca_file).is_relative_to(m) for m in mounts), "the CA is mounted"
