"""The test harness and the large-image DDS profile: 640x480 frames cross processes without loss."""

from __future__ import annotations

from pathlib import Path

import pytest

PEER = str(Path(__file__).parent / "peers" / "image_peer.py")


@pytest.mark.ros
def test_640x480_images_cross_processes_best_effort_without_loss(ros):
    assert ros.env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_large_data.xml")
    ros.start_python("sub", PEER, "sub", "--count", "60", "--timeout", "40")
    assert ros.processes.wait_for_line("sub", "subscribed", timeout=20)
    ros.wait_for_subscriber("/camera/image_raw", timeout=20)
    ros.start_python("pub", PEER, "pub", "--count", "60", "--rate", "30")
    sent = ros.json_result("pub", timeout=60)
    received = ros.json_result("sub", timeout=60)
    assert sent["sent"] == 60
    assert received["received"] == 60, received
    assert received["sizes"] == [640 * 480 * 3]


@pytest.mark.ros
def test_domains_are_isolated(ros):
    """A subscriber in another domain never sees this test's publisher."""
    from ros_harness import allocate_domain_id

    other = allocate_domain_id()
    assert other != ros.domain_id
    ros.start_python("sub_other", PEER, "sub", "--count", "1", "--timeout", "4", env={"ROS_DOMAIN_ID": str(other)})
    assert ros.processes.wait_for_line("sub_other", "subscribed", timeout=20)
    ros.start_python("pub", PEER, "pub", "--count", "5", "--timeout", "3")
    assert ros.json_result("pub", timeout=30) == {"sent": 0, "error": "no subscriber"}
    assert ros.json_result("sub_other", timeout=30)["received"] == 0
