"""The config is strict: every mistake stops the concierge at start, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pinniped_apis.authentication import ASYMMETRIC_ALGORITHMS
from pinniped_concierge import config
from pinniped_concierge.config import ConfigError


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("server.pem", "server.key", "idp-ca.pem", "admin.kubeconfig"):
        (tmp_path / name).write_text("x")
    return tmp_path


def base() -> dict[str, Any]:
    """The issue's example config, verbatim."""
    return {
        "listen": {"host": "127.0.0.1", "port": 8443},
        "tls": {"certFile": "server.pem", "keyFile": "server.key"},
        "kubernetes": {"kubeconfig": "admin.kubeconfig"},
        "namespace": "pinniped-concierge",
        "credentialTTLSeconds": 600,
        "authenticators": [{
            "name": "corp", "type": "jwt", "issuer": "https://127.0.0.1:9443",
            "audience": "pinniped-cli", "caFile": "idp-ca.pem",
            "claims": {"username": "email", "groups": "groups"},
            "usernamePrefix": "corp:", "groupsPrefix": "corp:",
        }],
    }


def load(files: Path, data: dict[str, Any]) -> config.Config:
    path = files / "concierge.yaml"
    path.write_text(yaml.safe_dump(data))
    return config.load(path)


def refused(files: Path, data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(files, data)
    return info.value


def test_the_issue_example_loads_with_paths_relative_to_the_config(files: Path) -> None:
    cfg = load(files, base())
    assert cfg.listen.host == "127.0.0.1"
    assert cfg.listen.port == 8443
    assert cfg.tls.cert_file == files / "server.pem"
    assert cfg.kubernetes.kubeconfig == files / "admin.kubeconfig"
    assert cfg.credential_ttl_seconds == 600
    assert cfg.audit_log is None  # standard output
    (auth,) = cfg.authenticators
    assert auth.issuer == "https://127.0.0.1:9443"
    assert auth.ca_file == files / "idp-ca.pem"
    assert auth.claims.username == "email"
    assert auth.claims.groups == "groups"
    assert auth.username_prefix == auth.groups_prefix == "corp:"
    assert "HS256" not in auth.algorithms
    assert "none" not in auth.algorithms
    assert "RS256" in auth.algorithms
    assert "ES256" in auth.algorithms


def test_optional_keys_are_read(files: Path) -> None:
    data = base() | {"clockSkewSeconds": 5, "auditLog": "audit.log", "userCacheTTLSeconds": 0,
                     "sessionSweepIntervalSeconds": 60, "logLevel": "debug",
                     "maxKeyAgeSeconds": 3600, "maxSessionsPerUser": 7,
                     "requestBodyTimeoutSeconds": 3, "maxConcurrentRequests": 40}
    data["authenticators"][0]["algorithms"] = ["ES256"]
    cfg = load(files, data)
    assert cfg.clock_skew_seconds == 5
    assert (cfg.max_key_age_seconds, cfg.max_sessions_per_user) == (3600, 7)
    assert (cfg.request_body_timeout_seconds, cfg.max_concurrent_requests) == (3, 40)
    assert cfg.audit_log == files / "audit.log"
    assert cfg.user_cache_ttl_seconds == 0
    assert cfg.session_sweep_interval_seconds == 60
    assert cfg.authenticators[0].algorithms == ("ES256",)


def test_defaults_of_the_limits(files: Path) -> None:
    cfg = load(files, base())
    assert cfg.max_key_age_seconds == 86400
    assert cfg.max_sessions_per_user == 50
    assert cfg.request_body_timeout_seconds == 10
    assert cfg.max_concurrent_requests == 200


def test_kubernetes_may_be_omitted_for_in_cluster_config(files: Path) -> None:
    data = base()
    del data["kubernetes"]
    assert load(files, data).kubernetes.kubeconfig is None


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["listen"].update(hots="x"), "listen.hots"),
    (lambda d: d["authenticators"][0].update(usernamePrefx="x"), "authenticators[0].usernamePrefx"),
    (lambda d: d["authenticators"][0]["claims"].update(mail="x"), "authenticators[0].claims.mail"),
])
def test_unknown_keys_are_refused_by_name(files: Path, mutate: Any, key: str) -> None:
    data = base()
    mutate(data)
    error = refused(files, data)
    assert error.key == key
    assert "unknown key" in str(error)


@pytest.mark.parametrize(("mutate", "key", "words"), [
    (lambda d: d.update(credentialTTLSeconds=599), "credentialTTLSeconds", "between 600"),
    (lambda d: d.update(credentialTTLSeconds="600"), "credentialTTLSeconds", "integer"),
    (lambda d: d.update(credentialTTLSeconds=True), "credentialTTLSeconds", "integer"),
    (lambda d: d.update(clockSkewSeconds=3600), "clockSkewSeconds", "between"),
    (lambda d: d["listen"].update(port=70000), "listen.port", "between"),
    (lambda d: d.update(namespace="Not_A_Namespace"), "namespace", "DNS-1123"),
    (lambda d: d.pop("namespace"), "namespace", "required"),
    (lambda d: d.pop("tls"), "tls", "required"),
    (lambda d: d["tls"].update(certFile="missing.pem"), "tls.certFile", "does not exist"),
    (lambda d: d.update(authenticators=[], jwtAuthenticators={"watch": False}),
     "authenticators", "no login could ever succeed"),
    (lambda d: d.update(externalEndpoint="http://concierge.example"), "externalEndpoint",
     "https://host:port"),
    (lambda d: d.update(credentialIssuerName="Not A Name"), "credentialIssuerName", "DNS"),
    (lambda d: d.update(jwtAuthenticators={"labelSelector": "a=b\nc=d"}),
     "jwtAuthenticators.labelSelector", "one line"),
    (lambda d: d.update(jwtAuthenticators={"maxObjects": 1000}),
     "jwtAuthenticators.maxObjects", "between 1 and 128"),
    (lambda d: d.update(jwtAuthenticators={"watch": "yes"}), "jwtAuthenticators.watch",
     "true or false"),
    (lambda d: d["tls"].update(caFile="missing.pem"), "tls.caFile", "does not exist"),
    (lambda d: d.update(authenticators=[second(f"a{i}", usernamePrefix=f"a{i}:",
                                               groupsPrefix=f"a{i}:") for i in range(65)]),
     "authenticators", "at most 64"),
    (lambda d: d.update(logLevel="loud"), "logLevel", "one of"),
    (lambda d: d.update(auditLog="/no/such/dir/audit.log"), "auditLog", "does not exist"),
    (lambda d: d["authenticators"][0].update(issuer="http://127.0.0.1:9443"),
     "authenticators[0].issuer", "https"),
    (lambda d: d["authenticators"][0].update(issuer="https://idp/?x=1"),
     "authenticators[0].issuer", "https"),
    (lambda d: d["authenticators"][0].update(type="ldap"), "authenticators[0].type",
     "the only authenticator type"),
    (lambda d: d["authenticators"][0].update(audience=""), "authenticators[0].audience", "empty"),
    (lambda d: d["authenticators"][0].update(name="Corp Inc"), "authenticators[0].name", "DNS"),
    (lambda d: d["authenticators"][0].pop("usernamePrefix"),
     "authenticators[0].usernamePrefix", "required"),
    (lambda d: d["authenticators"][0].update(usernamePrefix=""),
     "authenticators[0].usernamePrefix", "allowEmptyPrefixes"),
    (lambda d: d["authenticators"][0].update(groupsPrefix=""),
     "authenticators[0].groupsPrefix", "allowEmptyPrefixes"),
    (lambda d: d["authenticators"][0].update(groupsPrefix="system:"),
     "authenticators[0].groupsPrefix", "system:"),
    (lambda d: d["authenticators"][0].update(algorithms=["HS256"]),
     "authenticators[0].algorithms", "asymmetric"),
    (lambda d: d["authenticators"][0].update(algorithms=["none"]),
     "authenticators[0].algorithms", "asymmetric"),
    (lambda d: d["authenticators"][0].update(allowEmptyPrefixes="yes"),
     "authenticators[0].allowEmptyPrefixes", "true or false"),
    (lambda d: d["authenticators"][0].update(maxTokenBytes=10**6),
     "authenticators[0].maxTokenBytes", "between"),
    (lambda d: d["authenticators"].append(dict(d["authenticators"][0])),
     "authenticators[1].name", "duplicate"),
    (lambda d: d.update(maxKeyAgeSeconds=300), "maxKeyAgeSeconds", "keyRefreshIntervalSeconds"),
    (lambda d: d.update(maxSessionsPerUser=0), "maxSessionsPerUser", "between 1"),
    (lambda d: d.update(requestBodyTimeoutSeconds=0), "requestBodyTimeoutSeconds", "between 1"),
    (lambda d: d.update(maxConcurrentRequests=0), "maxConcurrentRequests", "between 1"),
])
def test_bad_values_are_refused_naming_the_key(files: Path, mutate: Any, key: str,
                                                words: str) -> None:
    data = base()
    mutate(data)
    error = refused(files, data)
    assert error.key == key
    assert words in str(error)
    assert str(error).startswith(key + ":")
    assert "Input should" not in str(error)  # pydantic's words are translated


def test_empty_prefixes_only_when_explicitly_allowed(files: Path) -> None:
    data = base()
    data["authenticators"][0].update(usernamePrefix="", groupsPrefix="", allowEmptyPrefixes=True)
    auth = load(files, data).authenticators[0]
    assert auth.username_prefix == auth.groups_prefix == ""
    assert auth.allow_empty_prefixes


def test_duplicate_yaml_keys_are_refused(files: Path) -> None:
    path = files / "dup.yaml"
    path.write_text(yaml.safe_dump(base()) + "namespace: other\n")
    with pytest.raises(ConfigError, match="duplicate key 'namespace'"):
        config.load(path)


def test_a_config_that_is_not_a_mapping_is_refused(files: Path) -> None:
    path = files / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load(path)


def test_a_missing_config_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml"):
        config.load(tmp_path / "nothere.yaml")


def second(name: str, **fields: Any) -> dict[str, Any]:
    """Another authenticator: by default another issuer, prefix other:."""
    return {"name": name, "issuer": "https://other.example", "audience": "pinniped-cli",
            "claims": {"username": "email", "groups": "groups"},
            "usernamePrefix": "other:", "groupsPrefix": "other:"} | fields


@pytest.mark.parametrize(("fields", "key"), [
    ({"usernamePrefix": "corp:"}, "usernamePrefix"),           # equal
    ({"usernamePrefix": "corp:x"}, "usernamePrefix"),          # ours starts with theirs
    ({"usernamePrefix": "co"}, "usernamePrefix"),              # theirs starts with ours
    ({"groupsPrefix": "corp:"}, "groupsPrefix"),
    ({"groupsPrefix": "corp:admins-"}, "groupsPrefix"),
    ({"usernamePrefix": "", "allowEmptyPrefixes": True}, "usernamePrefix"),  # empty
    ({"groupsPrefix": "", "allowEmptyPrefixes": True}, "groupsPrefix"),
    # same issuer, but the claims differ: sub "bob" could meet email "bob"
    ({"issuer": "https://127.0.0.1:9443", "usernamePrefix": "corp:",
      "claims": {"username": "sub", "groups": "groups"}}, "usernamePrefix"),
    # same issuer and claims, but "corp:" vs "corp:x" still lets user "x:a" meet user ":a"
    ({"issuer": "https://127.0.0.1:9443", "usernamePrefix": "corp:x"}, "usernamePrefix"),
])
def test_overlapping_prefixes_are_refused_naming_both(files: Path, fields: dict[str, Any],
                                                      key: str) -> None:
    data = base()
    data["authenticators"].append(second("partner", **fields))
    error = refused(files, data)
    assert error.key == f"authenticators[1].{key}"
    assert "'partner'" in str(error)
    assert "'corp'" in str(error)
    assert key in error.problem


def test_overlaps_are_found_between_any_two_authenticators(files: Path) -> None:
    data = base()
    data["authenticators"] += [second("a", usernamePrefix="a:", groupsPrefix="a:"),
                               second("b", usernamePrefix="b:", groupsPrefix="b:"),
                               second("c", usernamePrefix="a:c", groupsPrefix="c:")]
    error = refused(files, data)
    assert error.key == "authenticators[3].usernamePrefix"
    assert "'a'" in str(error)
    assert "'c'" in str(error)


def test_distinct_prefixes_and_one_issuer_per_audience_are_fine(files: Path) -> None:
    data = base()
    data["authenticators"] += [
        # the same issuer for another client: maps every token alike, may share corp:
        second("corp-es256", issuer="https://127.0.0.1:9443", audience="pinniped-es256",
               usernamePrefix="corp:", groupsPrefix="corp:"),
        second("partner", usernamePrefix="partner:", groupsPrefix="partner:"),
        second("minted", usernamePrefix="minted:", groupsPrefix="minted-groups:"),
    ]
    assert [a.name for a in load(files, data).authenticators] == [
        "corp", "corp-es256", "partner", "minted"]


def test_the_file_accepts_exactly_the_keys_it_always_has() -> None:
    assert sorted(config.key_schemas()) == sorted([
        "listen", "listen.host", "listen.port", "tls", "tls.certFile", "tls.keyFile",
        "tls.caFile", "kubernetes", "kubernetes.kubeconfig", "kubernetes.requestTimeoutSeconds",
        "namespace", "externalEndpoint", "credentialIssuerName", "jwtAuthenticators",
        "jwtAuthenticators.watch", "jwtAuthenticators.labelSelector",
        "jwtAuthenticators.maxObjects",
        "credentialTTLSeconds", "clockSkewSeconds", "auditLog", "sessionSweepIntervalSeconds",
        "userCacheTTLSeconds", "keyRefreshIntervalSeconds", "keyRefreshMinIntervalSeconds",
        "maxKeyAgeSeconds", "maxUsers", "maxSessionsPerUser", "requestBodyTimeoutSeconds",
        "requestHeaderTimeoutSeconds", "identityIdleTimeoutSeconds",
        "revocationRetentionSeconds", "rateLimit", "rateLimit.requestsPerSecond",
        "rateLimit.burst", "rateLimit.maxTrackedAddresses", "maxConcurrentRequests",
        "logLevel", "lease", "lease.name", "lease.durationSeconds",
        "lease.renewIntervalSeconds", "metrics", "metrics.port", "elevation",
        "elevation.syncIntervalSeconds", "elevation.pendingTimeoutSeconds",
        "elevation.retentionSeconds", "elevation.maxRequests", "elevation.maxOpenPerUser",
        "elevation.maxPerUser",
        "elevation.maxPolicies", "authenticators",
        "authenticators[].name",
        "authenticators[].type", "authenticators[].issuer", "authenticators[].audience",
        "authenticators[].caFile", "authenticators[].claims", "authenticators[].claims.username",
        "authenticators[].claims.groups", "authenticators[].allowEmptyPrefixes",
        "authenticators[].usernamePrefix", "authenticators[].groupsPrefix",
        "authenticators[].algorithms", "authenticators[].maxTokenBytes"])


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda d: d.update(credential_ttl_seconds=900), "credential_ttl_seconds"),
    (lambda d: d["tls"].update(cert_file="server.pem"), "tls.cert_file"),
    (lambda d: d["authenticators"][0].update(username_prefix="x:"),
     "authenticators[0].username_prefix"),
])
def test_the_python_attribute_names_are_not_keys_of_the_file(files: Path, mutate: Any,
                                                              key: str) -> None:
    data = base()
    mutate(data)
    error = refused(files, data)
    assert error.key == key
    assert "unknown key" in error.problem
    assert "--config-reference" in error.problem


def test_the_published_endpoint_ca_and_issuer_name_default_sensibly(files: Path) -> None:
    cfg = load(files, base())
    assert cfg.public_endpoint() == "https://127.0.0.1:8443"
    assert cfg.tls.client_ca_file() == files / "server.pem"
    assert cfg.credential_issuer() == "pinniped-concierge"  # the namespace
    assert cfg.jwt_authenticators.watch
    assert cfg.jwt_authenticators.label_selector == ""
    assert load(files, base() | {"listen": {"host": "::1", "port": 9443}}
                ).public_endpoint() == "https://[::1]:9443"
    (files / "clients-ca.pem").write_text("x")
    data = base() | {"externalEndpoint": "https://concierge.example.com",
                     "credentialIssuerName": "prod",
                     "jwtAuthenticators": {"labelSelector": "concierge.pinniped.dev/instance=a"}}
    data["tls"]["caFile"] = "clients-ca.pem"
    cfg = load(files, data)
    assert cfg.public_endpoint() == "https://concierge.example.com"
    assert cfg.tls.client_ca_file() == files / "clients-ca.pem"
    assert cfg.credential_issuer() == "prod"
    assert cfg.jwt_authenticators.label_selector == "concierge.pinniped.dev/instance=a"


def test_the_file_may_list_no_authenticator_when_objects_are_watched(files: Path) -> None:
    data = base()
    del data["authenticators"]
    assert load(files, data).authenticators == ()
    assert load(files, base() | {"authenticators": []}).authenticators == ()


def test_a_ca_file_far_larger_than_a_bundle_is_refused(files: Path) -> None:
    (files / "huge.pem").write_bytes(b"x" * (64 * 1024 + 1))
    data = base()
    data["tls"]["caFile"] = "huge.pem"
    error = refused(files, data)
    assert error.key == "tls.caFile"
    assert "larger than 65536 bytes" in error.problem


def test_a_key_set_to_null_counts_as_omitted(files: Path) -> None:
    data = base() | {"credentialTTLSeconds": None, "auditLog": None, "kubernetes": None}
    data["authenticators"][0]["claims"]["groups"] = None
    cfg = load(files, data)
    assert cfg.credential_ttl_seconds == 600
    assert cfg.audit_log is None
    assert cfg.kubernetes.kubeconfig is None
    assert cfg.authenticators[0].claims.groups is None


def test_an_audit_log_of_dash_is_standard_output(files: Path) -> None:
    assert load(files, base() | {"auditLog": "-"}).audit_log is None


@pytest.mark.parametrize(("mutate", "key", "problem"), [
    (lambda d: d.update({1: "x"}), "", "keys must be strings, not 1"),
    (lambda d: d["listen"].update({2: "x"}), "listen", "keys must be strings, not 2"),
    (lambda d: d.update(listen=5), "listen", "must be a mapping"),
    (lambda d: d["authenticators"].append(5), "authenticators[1]", "must be a mapping"),
    (lambda d: d["authenticators"][0].update(algorithms="RS256"),
     "authenticators[0].algorithms", "must be a list"),
    (lambda d: d["authenticators"][0].update(algorithms=[]),
     "authenticators[0].algorithms", "must be a non-empty list"),
    (lambda d: d.update(credentialTTLSeconds=599), "credentialTTLSeconds",
     "must be between 600 and 86400, not 599"),
    (lambda d: d["authenticators"][0].update(maxTokenBytes=1000),
     "authenticators[0].maxTokenBytes", "must be between 1024 and 32768, not 1000"),
    (lambda d: d.update(credentialTTLSeconds=900.0), "credentialTTLSeconds",
     "must be an integer"),
    (lambda d: d["tls"].update(certFile=7), "tls.certFile",
     "must be a file path (a non-empty string)"),
    (lambda d: d["authenticators"][0].update(issuer="https://[::1"),
     "authenticators[0].issuer", "must be an https:// URL without query or fragment "
     "(discovery and keys are only fetched over https)"),
    (lambda d: d["authenticators"][0]["claims"].update(username="e mail"),
     "authenticators[0].claims.username",
     "must be a claim name (1 to 128 letters, digits and _ . : / -)"),
    (lambda d: d["authenticators"][0].update(usernamePrefix="x" * 65),
     "authenticators[0].usernamePrefix", "must have at most 64 characters"),
])
def test_each_problem_is_said_in_plain_words(files: Path, mutate: Any, key: str,
                                             problem: str) -> None:
    data = base()
    mutate(data)
    error = refused(files, data)
    assert (error.key, error.problem) == (key, problem)


def test_a_loaded_config_cannot_be_changed(files: Path) -> None:
    cfg = load(files, base())
    # mypy refuses these assignments too (pydantic's plugin knows the models are frozen).
    with pytest.raises(ValidationError):
        cfg.namespace = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.authenticators[0].username_prefix = ""  # type: ignore[misc]


def test_the_authenticator_model_has_a_json_schema_with_the_file_keys() -> None:
    """The schema a JWTAuthenticator custom resource will use: camelCase, closed, constrained."""
    schema = config.JWTAuthenticatorConfig.model_json_schema(by_alias=True)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "issuer", "audience", "usernamePrefix",
                                       "groupsPrefix"}
    properties = schema["properties"]
    assert properties["algorithms"]["items"]["enum"] == list(ASYMMETRIC_ALGORITHMS)
    assert properties["maxTokenBytes"]["maximum"] == 32 * 1024
    assert properties["issuer"]["pattern"].startswith("^https://")
    assert properties["usernamePrefix"]["description"]
