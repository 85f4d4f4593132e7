"""Runtime environments (executor images) and compute profiles in the UI, with no frontend code.

jupyter-scheduler's UI shows a compute-type list when an environment carries `compute_types`;
the choice arrives as `Job.compute_type`, which selects a K8sConfig profile.
Configure with `c.SchedulerApp.environment_manager_class =
"jupyter_scheduler_k8s.environments.K8sEnvironmentManager"` (the Helm chart does).
"""
from typing import Dict, List

from jupyter_scheduler.environments import EnvironmentManager
from jupyter_scheduler.models import RuntimeEnvironment

from .config import K8sConfig, server_config

OUTPUT_FORMATS = {"ipynb": "Notebook", "html": "HTML", "md": "Markdown", "py": "Python", "log": "Run log"}
SELECTABLE_FORMATS = ["ipynb", "html", "md", "py"]


class K8sEnvironmentManager(EnvironmentManager):
    def __init__(self, config: K8sConfig = None):
        # SchedulerApp builds this class with no arguments, so it reads the server's config.
        self.k8s = config or K8sConfig(config=server_config())

    def list_environments(self) -> List[RuntimeEnvironment]:
        cfg = self.k8s
        profiles = list(cfg.profiles) or None
        default_profile = (cfg.default_profile or profiles[0]) if profiles else None
        environments = cfg.environments or [{"name": cfg.image.rsplit("/", 1)[-1], "image": cfg.image}]
        return [
            RuntimeEnvironment(
                # The UI matches on name and shows label: keep them equal.
                name=env["name"], label=env["name"],
                description=env.get("description") or f"Kubernetes Job with image {env['image']}",
                file_extensions=["ipynb"], output_formats=SELECTABLE_FORMATS,
                metadata={"image": env["image"]},
                compute_types=profiles, default_compute_type=default_profile,
            )
            for env in environments
        ]

    def manage_environments_command(self) -> str:
        return ""

    def output_formats_mapping(self) -> Dict[str, str]:
        return dict(OUTPUT_FORMATS)
