"""The model-build pipeline on SageMaker Pipelines: export + labels → train → evaluate → bar → register.

Every step runs our own image with an ``identigraph`` command — the pipeline is orchestration only, so
what runs in SageMaker is what runs on a laptop and in GitLab CI:

1. ``Prepare`` (ProcessingStep): ``identigraph graph export`` from Neptune, then ``identigraph label``.
2. ``Train`` (TrainingStep): ``identigraph train`` on a GPU instance sized by ``identigraph train
   --estimate`` on a representative snapshot (overridable per execution: ``TrainingInstanceType``).
3. ``Evaluate`` (ProcessingStep): unpacks model.tar.gz, ``identigraph evaluate``; its metrics.json is a
   PropertyFile the condition reads.
4. ``QualityBar`` (ConditionStep): the hold-out figures against the same bar as the lifecycle configuration's
   gate (pipeline parameters, so an execution can tighten them).
5. ``Register`` (ModelStep) into the model package group, ``PendingManualApproval`` — a person approves,
   and the approval event triggers the deploy pipeline. Below the bar: ``BelowBar`` (FailStep) says why.

Built with the SageMaker Python SDK v2 (``sagemaker.workflow``): v2's Pipelines API is the documented one
for these step types, and v3 would pull the full MLflow server stack and an older pyarrow than the
platform's. The definition is built with a PipelineSession on explicit S3 locations, so
``definition()`` needs no credentials and makes no AWS call (a test proves it with stubbed clients).
"""

from __future__ import annotations

import json
import os
from typing import Any

from identigraph.lifecycle.config import LifecycleConfig
from identigraph.lifecycle.sagemaker_jobs import MODEL_OUT, Instance, train_arguments, train_entry
from identigraph.lifecycle.sagemaker_registry import CONTENT_TYPES

PROC = "/opt/ml/processing"


def _sdk() -> None:
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is chosen on purpose (see above)


def pipeline_session(region: str, sagemaker_client: Any = None, boto_session: Any = None) -> Any:
    """A PipelineSession that records steps instead of calling AWS; a bucket is named so none is looked up."""
    _sdk()
    import boto3
    from sagemaker.workflow.pipeline_context import PipelineSession

    boto_session = boto_session or boto3.Session(region_name=region)
    return PipelineSession(boto_session=boto_session, sagemaker_client=sagemaker_client,
                           default_bucket="identigraph-unused-default-bucket")


def build_pipeline(cfg: LifecycleConfig, instance: Instance, session: Any, target: str | None = None) -> Any:
    """The Pipeline object; ``pipeline.definition()`` is the JSON SageMaker runs."""
    _sdk()
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.network import NetworkConfig
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import Condition, ConditionEquals, ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.entities import PipelineVariable
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep, TrainingStep

    sm = cfg.sagemaker
    sm.need("role_arn", "image_uri", "s3_uri")
    assert sm.role_arn is not None and sm.image_uri is not None and sm.s3_uri is not None  # need() raised otherwise
    role, base = sm.role_arn, sm.s3_uri.rstrip("/")
    run = Join(on="/", values=[base, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID])
    image = ParameterString("ImageUri", default_value=sm.image_uri)
    train_type = ParameterString("TrainingInstanceType", default_value=instance.type)
    bars = {name: ParameterFloat("Min" + "".join(p.capitalize() for p in name.replace(".", "_").split("_")),
                                 default_value=float(bar)) for name, bar in cfg.gate.min.items()}
    # the SDK annotates its lists and dicts as holding str | PipelineVariable: typed so, plain strings fit
    subnets: list[str | PipelineVariable] = list(sm.subnets)
    groups: list[str | PipelineVariable] = list(sm.security_group_ids)
    network = NetworkConfig(subnets=subnets, security_group_ids=groups) if subnets else None
    env: dict[str, str | PipelineVariable] = {"IDENTIGRAPH_CONFIG": sm.graph_config}

    def processor(entry: str, name: str) -> Processor:
        return Processor(role=role, image_uri=image, instance_count=1,
                         instance_type=sm.processing_instance_type, entrypoint=["/bin/sh", "-c", entry],
                         base_job_name=f"identigraph-{name}", sagemaker_session=session, env=env,
                         network_config=network, max_runtime_in_seconds=sm.max_runtime_s)

    labels = target is None
    prepare_cmd = (f"identigraph graph export --snapshot {PROC}/snapshot"
                   + (f" && identigraph label --snapshot {PROC}/snapshot --out {PROC}/labels" if labels else ""))
    outputs = [ProcessingOutput(output_name="snapshot", source=f"{PROC}/snapshot",
                                destination=Join(on="/", values=[run, "snapshot"]))]
    if labels:
        outputs.append(ProcessingOutput(output_name="labels", source=f"{PROC}/labels",
                                        destination=Join(on="/", values=[run, "labels"])))
    prepare = ProcessingStep("Prepare", step_args=processor(prepare_cmd, "prepare").run(outputs=outputs))
    snapshot_s3 = prepare.properties.ProcessingOutputConfig.Outputs["snapshot"].S3Output.S3Uri

    estimator = Estimator(image_uri=image, role=role, instance_count=1, instance_type=train_type,
                          output_path=Join(on="/", values=[run, "model"]), sagemaker_session=session,
                          container_entry_point=train_entry(instance),
                          container_arguments=train_arguments(labels, target), max_run=sm.max_runtime_s,
                          base_job_name="identigraph-train", environment=env,
                          subnets=subnets or None, security_group_ids=groups or None,
                          disable_profiler=True)
    channels = {"snapshot": TrainingInput(snapshot_s3)}
    if labels:
        channels["labels"] = TrainingInput(prepare.properties.ProcessingOutputConfig.Outputs["labels"].S3Output.S3Uri)
    train = TrainingStep("Train", step_args=estimator.fit(inputs=channels))
    model_tar = train.properties.ModelArtifacts.S3ModelArtifacts

    report = PropertyFile(name="EvaluationReport", output_name="evaluation", path="metrics.json")
    label_arg = f"--labels {PROC}/labels" if labels else f"--target {target}"
    evaluate_cmd = (f"mkdir -p /tmp/model && tar -xzf {PROC}/model/model.tar.gz -C /tmp/model && "
                    f"identigraph evaluate --snapshot {PROC}/snapshot --model /tmp/model {label_arg} && "
                    f"cp /tmp/model/metrics.json /tmp/model/evaluation.json {PROC}/evaluation/")
    eval_inputs = [ProcessingInput(source=model_tar, destination=f"{PROC}/model", input_name="model"),
                   ProcessingInput(source=snapshot_s3, destination=f"{PROC}/snapshot", input_name="snapshot")]
    if labels:
        eval_inputs.append(ProcessingInput(
            source=prepare.properties.ProcessingOutputConfig.Outputs["labels"].S3Output.S3Uri,
            destination=f"{PROC}/labels", input_name="labels"))
    evaluation_s3 = Join(on="/", values=[run, "evaluation"])
    evaluate = ProcessingStep("Evaluate", property_files=[report], step_args=processor(evaluate_cmd, "evaluate").run(
        inputs=eval_inputs, outputs=[ProcessingOutput(output_name="evaluation", source=f"{PROC}/evaluation",
                                                      destination=evaluation_s3)]))

    model = Model(image_uri=image, model_data=model_tar, role=role, sagemaker_session=session,
                  env={"IDENTIGRAPH_MODEL_DIR": MODEL_OUT})
    register = ModelStep("Register", step_args=model.register(
        content_types=CONTENT_TYPES, response_types=CONTENT_TYPES,
        inference_instances=sm.inference_instance_types, transform_instances=sm.inference_instance_types[:1],
        model_package_group_name=cfg.registry.model_name, approval_status="PendingManualApproval",
        model_metrics=ModelMetrics(model_statistics=MetricsSource(
            content_type="application/json", s3_uri=Join(on="/", values=[evaluation_s3, "metrics.json"]))),
        description="identigraph fraud model from the model-build pipeline"))
    # JsonGet is what the SDK's own examples compare; its annotation of ``left`` omits it
    conditions: list[Condition] = [
        ConditionGreaterThanOrEqualTo(left=JsonGet(step_name=evaluate.name, property_file=report,  # type: ignore[arg-type]
                                                   json_path=name), right=param)
        for name, param in bars.items()]
    if cfg.gate.threshold_reached:  # else the threshold is a best-F1 fallback, not the operating precision
        conditions.append(ConditionEquals(left=JsonGet(step_name=evaluate.name, property_file=report,  # type: ignore[arg-type]
                                                       json_path="threshold_reached"), right=True))
    below = FailStep("BelowBar", error_message="hold-out figures below the bar ("
                     + ", ".join(f"{n} ≥ {p.name}" for n, p in bars.items()) + "): see the Evaluate step's metrics.json")
    bar = ConditionStep("QualityBar", conditions=conditions, if_steps=[register], else_steps=[below])
    return Pipeline(name=sm.pipeline_name, parameters=[image, train_type, *bars.values()],
                    steps=[prepare, train, evaluate, bar], sagemaker_session=session)


def definition(cfg: LifecycleConfig, instance: Instance, session: Any, target: str | None = None) -> dict[str, Any]:
    """The pipeline's JSON definition, what SageMaker stores and what tests compare."""
    return json.loads(build_pipeline(cfg, instance, session, target).definition())
