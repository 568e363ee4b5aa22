"""Test peer: publish or receive numbered sensor_msgs/Image frames with camera (best-effort) QoS.

pub: waits for a subscriber, publishes --count frames at --rate Hz, prints {"sent": N}.
sub: counts distinct frames until --count arrive or --timeout passes, prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

TOPIC = "/camera/image_raw"


def publish(node, args) -> dict:
    pub = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            return {"sent": 0, "error": "no subscriber"}
        time.sleep(0.02)
    time.sleep(0.3)  # matched is not yet delivered-to: give the SHM transport its handshake
    pixels = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
    period = 1.0 / args.rate
    for i in range(args.count):
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        msg.header.frame_id = str(i)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = pixels.tobytes()
        pub.publish(msg)
        time.sleep(period)
    time.sleep(0.5)
    return {"sent": args.count}


def subscribe(node, args) -> dict:
    seen: set[int] = set()
    latencies: list[float] = []
    sizes: set[int] = set()

    def on_image(msg: Image) -> None:
        seen.add(int(msg.header.frame_id))
        sizes.add(len(msg.data))
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append((node.get_clock().now().nanoseconds * 1e-9 - stamp) * 1e3)

    node.create_subscription(Image, TOPIC, on_image, qos_profile_sensor_data)
    print("subscribed", flush=True)
    deadline = time.monotonic() + args.timeout
    while len(seen) < args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return {
        "received": len(seen),
        "sizes": sorted(sizes),
        "latency_ms_median": float(np.median(latencies)) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node(f"image_{args.role}")
    try:
        result = publish(node, args) if args.role == "pub" else subscribe(node, args)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
