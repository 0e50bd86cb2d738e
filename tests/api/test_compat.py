"""HTC-Grid's connector on htcgrid: the config keys mapped, a round trip through the API,
failures and cancellations in HTC-Grid's result dict, and an explicit timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htcgrid.api.serve import ApiThread
from htcgrid.compat import AWSConnector, CompatConfig
from htcgrid.workloads import expected_mock_result
from tests.api.conftest import TOKEN_A

EXAMPLE = Path(__file__).parents[2] / "examples" / "htcgrid_compat"


def htcgrid_config(api: ApiThread, **extra: object) -> dict[str, object]:
    """An HTC-Grid agent config as its Terraform renders it, pointed at our API."""
    return {
        "region": "eu-west-1",
        "public_api_gateway_url": f"{api.url}/v1",
        "api_gateway_key": TOKEN_A,
        "grid_storage_service": "REDIS",
        "user_pool_id": "eu-west-1_ignored",
        "dynamodb_results_pull_interval_sec": 0.5,
        "task_input_passed_via_external_storage": 1,
        **extra,
    }


def test_config_keys_map_to_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    config = CompatConfig.from_htcgrid(
        {
            "public_api_gateway_url": "https://abc.execute-api.eu-west-1.amazonaws.com/v1/",
            "private_api_gateway_url": "https://private.example/v1",
            "api_gateway_key": {"api_key": "k"},
            "lambda_handler_file_name": "engine",
            "lambda_handler_function_name": "lambda_handler",
            "task_timeout_sec": 60,
            "retry_count": 4,
        }
    )
    assert config.url == "https://abc.execute-api.eu-west-1.amazonaws.com"
    assert config.token == "k" and config.handler == "engine:lambda_handler"
    assert config.timeout_s == 60.0 and config.max_attempts == 5
    monkeypatch.setenv("INTRA_VPC", "1")
    private = CompatConfig.from_htcgrid({"private_api_gateway_url": "https://private.example/v1"})
    assert private.url == "https://private.example"
    direct = CompatConfig.from_htcgrid({"grid_storage_service": "sqlite:///tmp/grid.db"})
    assert direct.url == "sqlite:///tmp/grid.db"
    assert direct.handler == "htcgrid.workloads:mock_computation"


@pytest.mark.e2e
def test_send_and_get_results_round_trip(grid_api: ApiThread) -> None:
    connector = AWSConnector()
    connector.init(htcgrid_config(grid_api, retry_count=0), username="", password="")
    connector.authenticate()
    tasks = [{"sleep_ms": 1, "trade": i} for i in range(5)] + [{"sleep_ms": "soon"}]
    submission = connector.send(tasks)
    sid = submission["session_id"]
    assert submission["task_ids"] == [f"{sid}.{i}" for i in range(6)]
    results = connector.get_results(submission, timeout_sec=60)
    assert sorted(results["finished"]) == submission["task_ids"][:5]
    outputs = {
        tid: json.loads(out)
        for tid, out in zip(results["finished"], results["finished_OUTPUT"], strict=True)
    }
    assert outputs[f"{sid}.3"] == expected_mock_result(tasks[3])
    assert results["failed"] == [f"{sid}.5"]
    assert results["failed_OUTPUT"][0].startswith("TypeError: sleep_ms must be a number")
    assert results["metadata"] == {"tasks_in_response": 6, "timed_out": False, "unfinished": []}
    connector.close()


@pytest.mark.e2e
def test_a_timeout_says_what_is_unfinished_and_cancel_reports_counts(
    grid_api: ApiThread,
) -> None:
    connector = AWSConnector(htcgrid_config(grid_api))
    submission = connector.send([{"sleep_ms": 1}, {"sleep_ms": 20_000}, {"sleep_ms": 20_000}])
    slow = submission["task_ids"][1:]
    partial = connector.get_results(submission, timeout_sec=1.0)
    assert partial["metadata"]["timed_out"] is True
    assert sorted(partial["metadata"]["unfinished"]) == slow
    assert len(partial["finished"]) == 1
    cancelled = connector.cancel_sessions([submission["session_id"]])
    assert cancelled[submission["session_id"]]["total_cancelled_tasks"] == 2
    final = connector.get_results(submission, timeout_sec=30)
    assert sorted(final["cancelled"]) == slow and final["metadata"]["unfinished"] == []
    connector.close()


@pytest.mark.e2e
def test_the_ported_example_runs_with_only_its_config_changed(
    grid_api: ApiThread, tmp_path: Path
) -> None:
    config = json.loads((EXAMPLE / "Agent_config.json").read_text())
    config["public_api_gateway_url"] = f"{grid_api.url}/v1"
    # the workers import the example's engine from the repository root
    config["lambda_handler_file_name"] = "examples.htcgrid_compat.engine"
    path = tmp_path / "Agent_config.json"
    path.write_text(json.dumps(config))
    env = dict(os.environ, AGENT_CONFIG_FILE=str(path), HTCGRID_TOKEN=TOKEN_A)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "simple_client.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    results = json.loads(done.stdout.splitlines()[-1])
    assert sorted(results["finished_OUTPUT"]) == ["1000", "2000"]
    assert results["metadata"]["timed_out"] is False
