"""HTC-Grid's simple client flow on htcgrid: two mock-engine tasks, then their results.

The flow is HTC-Grid's ``examples/client/python/simple_client.py``: read the agent config
named by ``$AGENT_CONFIG_FILE``, ``init`` and ``authenticate`` a connector, ``send`` two
tasks, ``get_results`` with a timeout. What changes is the import (``htcgrid.compat``
instead of HTC-Grid's ``api.connector``) and the config file (see ``Agent_config.json``).
"""

from __future__ import annotations

import json
import logging
import os

from htcgrid.compat import AWSConnector

config_path = os.environ.get("AGENT_CONFIG_FILE", "/etc/agent/Agent_config.tfvars.json")
with open(config_path) as file:
    agent_config = json.load(file)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    logging.info("Simple Client")
    connector = AWSConnector()
    connector.init(
        agent_config,
        username=os.environ.get("USERNAME", ""),
        password=os.environ.get("PASSWORD", ""),
    )
    connector.authenticate()

    first_task = {"worker_arguments": ["1000", "1", "1"]}
    second_task = {"worker_arguments": ["2000", "1", "1"]}

    submission = connector.send([first_task, second_task])
    logging.info(submission)

    results = connector.get_results(submission, timeout_sec=100)
    logging.info(results)
    print(json.dumps(results))
