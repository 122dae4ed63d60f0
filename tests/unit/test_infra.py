"""The local infrastructure helpers' own pure parts."""

import base64
import uuid

from services.cli.infra import _cluster_id


def test_cluster_ids_are_kafka_uuids_that_storage_tool_takes_as_a_value() -> None:
    # One random id in 64 starts with "-", which kafka-storage's parser reads as an option
    # ("argument --cluster-id/-t: expected one argument"); 5,000 draws would hit one.
    ids = {_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert not cluster_id.startswith("-")
        assert len(cluster_id) == 22
        assert uuid.UUID(bytes=base64.urlsafe_b64decode(cluster_id + "==")).version == 4
