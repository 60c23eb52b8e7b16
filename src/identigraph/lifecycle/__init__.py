"""The model lifecycle: registry (MLflow or SageMaker), registration bar, approval, staged promotion that
reaches serving, the SageMaker model-build pipeline and training jobs, and hyperparameter tuning.

Modules stay small and import their heavy dependencies (MLflow, the SageMaker SDK, Optuna) lazily.
"""
