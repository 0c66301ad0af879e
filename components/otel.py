"""The OTEL collector that runs next to each app: its image, its configuration and its IAM needs.

The sidecar is the AWS Distro for OpenTelemetry collector, pinned by version. It receives OTLP on
``127.0.0.1:4317`` (gRPC) and ``127.0.0.1:4318`` (HTTP) and, where the catalog declares a Prometheus
endpoint, scrapes it every 30 s. By default traces go to X-Ray and metrics to CloudWatch as EMF (into
the service's own metrics log group, namespace ``Platform/<env>/<system>``: dev, staging and prod share
an account by default, so the environment is in the namespace, or an alarm of one environment would read
another's numbers); with an external OTLP endpoint
both go there instead, authenticated with a header whose value comes from Secrets Manager.

The configuration is passed in ``AOT_CONFIG_CONTENT`` as JSON (a YAML subset the collector reads).
"""

from __future__ import annotations

import json
from typing import Any

from stacks.catalog import MetricsEndpoint

# ADOT collector releases: github.com/aws-observability/aws-otel-collector/releases. Bump deliberately.
IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.47.0"
USER = "10001:10001"  # the image's own non-root user (aoc)
OTLP_HTTP_PORT = 4318
OTLP_GRPC_PORT = 4317
AUTH_ENV = "OTLP_AUTH"
CONTAINER = "otel-collector"


def namespace(env: str, system: str) -> str:
    """The CloudWatch namespace the EMF exporter writes a system's metrics to (and its alarms read).

    Dimensions (opentelemetry-collector-contrib ``exporter/awsemfexporter``, ``dimensionRollup`` with the
    default ``ZeroAndSingleDimensionRollup``): ``OTelLib`` (the instrumentation scope, i.e. the meter's
    name) plus the data point's attributes, rolled up to ``{OTelLib}`` alone and ``{OTelLib, <attr>}``
    for each attribute. Resource attributes (``service.name``, ``deployment.environment``) are not
    dimensions (``resource_to_telemetry_conversion`` is off).
    """
    return f"Platform/{env}/{system}"


def collector_config(
    *,
    env: str,
    system: str,
    service_key: str,
    metrics: MetricsEndpoint | None,
    metrics_log_group: str,
    region: str,
    otlp_endpoint: str | None,
    auth_header: str,
) -> dict[str, Any]:
    """The collector pipeline for one service."""
    receivers: dict[str, Any] = {
        "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{OTLP_GRPC_PORT}"}, "http": {"endpoint": f"127.0.0.1:{OTLP_HTTP_PORT}"}}}
    }
    metric_receivers = ["otlp"]
    if metrics is not None:
        receivers["prometheus"] = {
            "config": {
                "scrape_configs": [
                    {
                        "job_name": service_key,
                        "scrape_interval": "30s",
                        "metrics_path": metrics.path,
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics.port}"]}],
                    }
                ]
            }
        }
        metric_receivers.append("prometheus")
    processors = {"batch": {"timeout": "10s"}, "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20}}
    if otlp_endpoint:
        exporters: dict[str, Any] = {"otlphttp": {"endpoint": otlp_endpoint, "headers": {auth_header: f"${{env:{AUTH_ENV}}}"}}}
        traces, metrics_out = ["otlphttp"], ["otlphttp"]
    else:
        exporters = {
            "awsxray": {"region": region},
            # the rollup the queue alarms read ({OTelLib} alone), stated: the exporter's default can be turned
            # off by a feature gate (awsemf.nodimrollupdefault), which would leave those alarms at OK forever
            "awsemf": {
                "region": region,
                "namespace": namespace(env, system),
                "log_group_name": metrics_log_group,
                "log_stream_name": service_key,
                "dimension_rollup_option": "ZeroAndSingleDimensionRollup",
            },
        }
        traces, metrics_out = ["awsxray"], ["awsemf"]
    return {
        "receivers": receivers,
        "processors": processors,
        "exporters": exporters,
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": traces},
                "metrics": {"receivers": metric_receivers, "processors": ["memory_limiter", "batch"], "exporters": metrics_out},
            }
        },
    }


def task_role_policy(metrics_log_group_arn: str) -> dict[str, Any]:
    """What the collector needs and nothing else: write traces to X-Ray and EMF to its log group."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "XRay",
                "Effect": "Allow",
                "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"],
                "Resource": "*",
            },
            {
                "Sid": "EmfLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [metrics_log_group_arn, f"{metrics_log_group_arn}:*"],
            },
        ],
    }


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)
