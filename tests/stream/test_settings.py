from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

import pytest

from cropworker.errors import SettingsError
from cropworker.stream.settings import Secret, Settings, add_arguments, from_namespace


def test_environment_variables_set_every_kind_of_field() -> None:
    settings = Settings.from_env(
        {
            "CROPWORKER_INPUT_TOPIC": "in",
            "CROPWORKER_MAX_BATCH": "4",
            "CROPWORKER_MAX_WAIT_MS": "2.5",
            "CROPWORKER_ASPECTS": "3:2, 1:1",
            "CROPWORKER_HTTP_ALLOWED_HOSTS": "img.example.com,*.cdn.example.com",
            "CROPWORKER_HTTP_ALLOW_PRIVATE": "yes",
            "CROPWORKER_FILE_ROOT": "/data",
            "CROPWORKER_SASL_PASSWORD": "hunter2",
            "UNRELATED": "x",
        }
    )
    assert settings.input_topic == "in" and settings.max_batch == 4
    assert settings.max_wait_ms == 2.5
    assert settings.aspects == ("3:2", "1:1")
    assert settings.http_allowed_hosts == ("img.example.com", "*.cdn.example.com")
    assert settings.http_allow_private is True
    assert settings.file_root == Path("/data")
    assert settings.sasl_password == Secret("hunter2")


def test_variables_override_given_defaults_and_flags_override_variables() -> None:
    env = {"CROPWORKER_GROUP_ID": "from-env"}
    assert Settings.from_env(env, group_id="demo", output_topic="o").group_id == "from-env"
    assert Settings.from_env(env, output_topic="o").output_topic == "o"
    parser = argparse.ArgumentParser()
    add_arguments(parser, Settings.from_env(env), demo=True)
    args = parser.parse_args(["--group-id", "from-flag", "--aspect", "2:1", "--follow"])
    settings = from_namespace(args)
    assert settings.group_id == "from-flag"
    assert settings.aspects == ("2:1",) and settings.follow is True
    help_text = " ".join(parser.format_help().split())
    assert "(env CROPWORKER_GROUP_ID; default 'from-env')" in help_text
    worker_only = argparse.ArgumentParser()
    add_arguments(worker_only, Settings())
    assert "--follow" not in worker_only.format_help()
    assert from_namespace(worker_only.parse_args([])).follow is False


@pytest.mark.parametrize(
    ("name", "value"),
    [("CROPWORKER_MAX_BATCH", "eight"), ("CROPWORKER_ASPECTS", "16x9"), ("CROPWORKER_FOLLOW", "2")],
)
def test_bad_variables_are_settings_errors(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_inconsistent_values_are_rejected() -> None:
    with pytest.raises(SettingsError, match="max_in_flight"):
        Settings(max_batch=16, max_in_flight=8)
    with pytest.raises(SettingsError, match="log_format"):
        Settings(log_format="xml")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SettingsError, match="prepare_timeout_s"):
            Settings(prepare_timeout_s=bad)
    for bad in (-1.0, float("nan")):  # the micro-batcher would refuse it at start-up
        with pytest.raises(SettingsError, match="max_wait_ms"):
            Settings(max_wait_ms=bad)
    with pytest.raises(SettingsError, match="loop_timeout_s"):
        Settings(shutdown_timeout_s=30, loop_timeout_s=30)  # a drain would look like a hang
    with pytest.raises(SettingsError, match="assignor"):
        Settings(assignor="sticky")
    with pytest.raises(SettingsError, match="offset_reset"):
        Settings(offset_reset="none")


def test_the_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password=Secret("hunter2"))
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %r", settings, settings.describe())
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.describe())
    assert settings.consumer_config()["sasl.password"] == "hunter2"  # only where it is used


def test_kafka_configs_store_offsets_only_by_hand() -> None:
    settings = Settings(brokers="b:9092", session_timeout_ms=6000)
    consumer, producer = settings.consumer_config(), settings.producer_config()
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["enable.auto.commit"] is False
    assert consumer["heartbeat.interval.ms"] == 2000
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert "sasl.password" not in consumer
    assert consumer["receive.message.max.bytes"] > consumer["fetch.max.bytes"]


def test_client_id_tells_pods_and_processes_apart() -> None:
    """In a container every worker is PID 1: the host name (the pod's name) is in the default,
    and the chart's (or anyone's) CROPWORKER_CLIENT_ID wins."""
    settings = Settings()
    default = settings.consumer_config()["client.id"]
    assert default == f"cropworker-{socket.gethostname()}-{os.getpid()}"
    assert settings.producer_config()["client.id"] == default
    named = Settings.from_env({"CROPWORKER_CLIENT_ID": "cropworker-web-7f9c-x2"})
    assert named.consumer_config()["client.id"] == "cropworker-web-7f9c-x2"
    assert named.producer_config()["client.id"] == "cropworker-web-7f9c-x2"


def test_group_settings_reach_the_consumer() -> None:
    consumer = Settings().consumer_config()
    assert consumer["partition.assignment.strategy"] == "cooperative-sticky"
    assert consumer["auto.offset.reset"] == "earliest"  # nothing produced before a commit skipped
    changed = Settings.from_env(
        {"CROPWORKER_ASSIGNOR": "range", "CROPWORKER_OFFSET_RESET": "latest"}
    ).consumer_config()
    assert changed["partition.assignment.strategy"] == "range"
    assert changed["auto.offset.reset"] == "latest"
