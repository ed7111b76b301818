"""The whole chain from one TOML config: data, dense fine-tune, IMP searches, baselines, the best
ticket's fine-tune, export and bench. ``edgeticket demo`` runs the shipped ``demo`` preset."""

from edgeticket.pipeline.config import PipelineConfig, load_config
from edgeticket.pipeline.stages import PRESETS, STAGES, Pipeline, preset_path, run_pipeline

__all__ = ["PRESETS", "STAGES", "Pipeline", "PipelineConfig", "load_config", "preset_path", "run_pipeline"]
