"""`rayguard-node run` settings: run_config's errors name the field; defaults are DESIGN's."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayguard_node.errors import InvalidSetting
from rayguard_node.contract.reports import Identity
from rayguard_node.run.config import RunConfig, run_config

HEAD_ADDRESS_FIELD = "--head-address / RAYGUARD_HEAD_ADDRESS"
PARAMS_FIELD = "--ray-start-params / rayStartParams"


def field_of(values):
    with pytest.raises(InvalidSetting) as caught:
        run_config(values)
    return caught.value.field


# -- errors ---------------------------------------------------------------------------

def test_missing_role():
    assert field_of({}) == "--role / RAYGUARD_ROLE"
    assert field_of({"head_address": "h:1"}) == "--role / RAYGUARD_ROLE"


@pytest.mark.parametrize("address", [None, ""])
def test_worker_needs_a_head_address(address):
    values = {"role": "worker"} if address is None else {"role": "worker", "head_address": address}
    assert field_of(values) == HEAD_ADDRESS_FIELD


@pytest.mark.parametrize("address", ["demo-head", ":6379", "demo-head:", "demo-head:gcs",
                                     "demo-head:63 79", "demo-head:-1"])
def test_worker_head_address_must_be_host_port(address):
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "worker", "head_address": address})
    assert caught.value.field == HEAD_ADDRESS_FIELD
    assert repr(address) in str(caught.value)
    assert "host:port" in str(caught.value)


@pytest.mark.parametrize("name, value", [("redis_port", 0), ("redis_port", 65536),
                                         ("redis_port", -1), ("health_port", 0),
                                         ("health_port", 70000)])
def test_bad_ports(name, value):
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", name: value})
    assert caught.value.field.startswith("--" + name.replace("_", "-"))
    assert "not a TCP port" in str(caught.value)


@pytest.mark.parametrize("name", ["redis_port", "health_port"])
@pytest.mark.parametrize("value", [1, 65535])
def test_edge_ports_are_fine(name, value):
    assert getattr(run_config({"role": "head", name: value}), name) == value


def test_negative_grace():
    assert field_of({"role": "head", "grace_seconds": -0.5}) == "--grace-seconds / RAYGUARD_GRACE_SECONDS"
    assert run_config({"role": "head", "grace_seconds": 0}).grace_seconds == 0.0


@pytest.mark.parametrize("flag", ["num-cpus", "memory", "object-store-memory", "address", "head",
                                  "block", "temp-dir", "--num-cpus", "--head"])
def test_ray_start_params_may_not_own_rayguards_flags(flag):
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", "ray_start_params": {"dashboard-port": 8265, flag: "1"}})
    assert caught.value.field == f"{PARAMS_FIELD}.{flag}"
    assert "rayguard sets this flag itself" in str(caught.value)


@pytest.mark.parametrize("key", ["temp-dir=/tmp/evil", "address=evil:6379", "num-cpus=64", "NUM-CPUS",
                                 "num_cpus", "--Num_Cpus", "Object_Store_Memory", "", "-",
                                 "node name", "node-name\n--temp-dir", "nodé"])
def test_smuggled_or_malformed_keys_are_refused(key):
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "worker", "head_address": "h:1", "ray_start_params": {key: "1"}})
    assert caught.value.field.startswith(PARAMS_FIELD) and "\n" not in str(caught.value)


def test_keys_are_stored_in_rays_own_spelling():
    config = run_config({"role": "head", "ray_start_params": {"--Dashboard_Port": 8265, "PORT": 7000}})
    assert dict(config.ray_start_params) == {"dashboard-port": 8265, "port": 7000}
    assert config.gcs_port == 7000


def test_the_same_flag_twice_is_refused():
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", "ray_start_params": {"num-gpus": 1, "num_gpus": 2}})
    assert caught.value.field == f"{PARAMS_FIELD}.num_gpus" and "'num-gpus'" in str(caught.value)


def test_secret_looking_values_are_not_shown_in_errors():
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", "ray_start_params": {"redis-password": ["hunter2"]}})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("value", [{"CPU": 1}, [1, 2], ("a",)])
def test_ray_start_params_values_must_be_scalars(value):
    assert field_of({"role": "head", "ray_start_params": {"resources": value}}) == \
        PARAMS_FIELD + ".resources"


def test_scalar_params_are_accepted():
    params = {"dashboard-port": 8265, "include-dashboard": False, "spill": 0.5,
              "node-name": "n", "disable-usage-stats": None}
    assert dict(run_config({"role": "head", "ray_start_params": params}).ray_start_params) == params


# -- defaults and identity ------------------------------------------------------------

def test_head_defaults():
    config = run_config({"role": "head"})
    assert config == RunConfig(role="head", identity=Identity(role="head"), num_gpus=0)  # no GPU tasks
    assert config.redis_port == 6380
    assert config.health_port == 8079
    assert config.grace_seconds == 25.0
    assert config.head_address is None and config.redis_url is None
    assert config.ray_auth_token_file is None and config.redis_password_file is None
    assert config.ray_temp_dir is None
    assert config.effective_temp_dir == Path("/tmp/ray")
    assert dict(config.ray_start_params) == {} and dict(config.flush_policy) == {}


def test_identity_is_copied():
    config = run_config({"role": "worker", "head_address": "demo-head:6379", "cluster": "demo",
                         "pod_namespace": "team-a", "pod_name": "demo-worker-cpu-x7k2p",
                         "group": "cpu"})
    assert config.identity == Identity(cluster="demo", namespace="team-a",
                                       pod="demo-worker-cpu-x7k2p", group="cpu", role="worker")


def test_values_are_typed():
    config = run_config({"role": "head", "redis_url": "redis://r:6379/0", "redis_port": 7001,
                         "health_port": 9000, "grace_seconds": 3, "ray_temp_dir": "/var/ray",
                         "ray_auth_token_file": "/s/token", "redis_password_file": "/s/pw"})
    assert config.redis_url == "redis://r:6379/0"
    assert (config.redis_port, config.health_port, config.grace_seconds) == (7001, 9000, 3.0)
    assert config.ray_temp_dir == Path("/var/ray") == config.effective_temp_dir
    assert config.ray_auth_token_file == Path("/s/token")
    assert config.redis_password_file == Path("/s/pw")


def test_empty_strings_mean_unset():
    config = run_config({"role": "head", "redis_url": "", "ray_temp_dir": "", "cluster": None})
    assert config.redis_url is None and config.ray_temp_dir is None
    assert config.identity.cluster == ""


# -- gcs_port and head_host -----------------------------------------------------------

def test_gcs_port_of_the_head():
    assert run_config({"role": "head"}).gcs_port == 6379
    assert run_config({"role": "head", "ray_start_params": {"port": 7000}}).gcs_port == 7000
    assert run_config({"role": "head", "ray_start_params": {"port": "7001"}}).gcs_port == 7001


def test_gcs_port_and_host_of_a_worker():
    config = run_config({"role": "worker", "head_address": "demo-head.ns.svc:6380"})
    assert config.gcs_port == 6380
    assert config.head_host == "demo-head.ns.svc"
    assert run_config({"role": "head"}).head_host == "127.0.0.1"


# -- flush policy ---------------------------------------------------------------------

def test_flush_policy_keys_pass_through():
    config = run_config({"role": "head", "flush_when_at_least_bytes": 1024**3,
                         "flush_period_secs": 2.5, "flush_num_entries_each_time": 500,
                         "heap_fraction": 0.4})
    assert dict(config.flush_policy) == {"flush_when_at_least_bytes": 1024**3,
                                         "flush_period_secs": 2.5,
                                         "flush_num_entries_each_time": 500}


def test_flush_policy_only_given_keys():
    config = run_config({"role": "head", "flush_period_secs": 30.0})
    assert dict(config.flush_policy) == {"flush_period_secs": 30.0}


# -- found bugs -----------------------------------------------------------------------

@pytest.mark.parametrize("address", ["demo-head:70000", "demo-head:0"])
def test_worker_head_address_port_must_be_a_tcp_port(address):
    assert field_of({"role": "worker", "head_address": address}) == HEAD_ADDRESS_FIELD


def test_head_port_param_must_be_a_port():
    assert field_of({"role": "head", "ray_start_params": {"port": "gcs"}}).startswith(PARAMS_FIELD)


# -- numbers that are not numbers, and Redis URLs -------------------------------------

@pytest.mark.parametrize("name, value", [("grace_seconds", float("nan")), ("grace_seconds", float("inf")),
                                         ("flush_period_secs", float("nan")),
                                         ("flush_period_secs", float("inf")),
                                         ("flush_when_at_least_bytes", float("nan"))])
def test_nan_and_inf_are_refused(name, value):
    assert field_of({"role": "head", name: value}).startswith("--" + name.replace("_", "-"))


REDIS_URL_FIELD = "--redis-url / RAYGUARD_REDIS_URL"


@pytest.mark.parametrize("url", ["localhost:6379", "http://r:6379/0", "unix:///tmp/redis.sock",
                                 "redis://", "redis://:6379/0", "redis://r:port/0", "redis://r:0/0",
                                 "redis://r:70000/0", "redis://r:6379/db", "redis://r:6379/0/1",
                                 "redis://r:6379/-1", "redis://r:6379/0?socket_timeout=soon",
                                 "redis://r:63 79/0", "redis://r\n:6379/0", " redis://r:6379"])
def test_malformed_redis_url_is_refused_at_start(url):
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", "redis_url": url})
    assert caught.value.field == REDIS_URL_FIELD and "\n" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://r:6379/0", "rediss://r.example.com:6380", "redis://r",
                                 "redis://:pw@r:6379/2", "redis://user:pw@10.0.0.5:6379/",
                                 "redis://[::1]:6379/0"])
def test_good_redis_urls(url):
    assert run_config({"role": "head", "redis_url": url}).redis_url == url


def test_the_password_of_a_refused_redis_url_is_not_shown():
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": "head", "redis_url": "redis://:hunter2@r:port/0"})
    assert "hunter2" not in str(caught.value)
