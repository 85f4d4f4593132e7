"""Direct or hub mode: the one place that picks how the server reaches Kubernetes. Direct, the
server's own credentials (kube/driver.py KubeDriver); in hub mode (K8sConfig.gateway_url), the jobs
gateway's client, which acts the same through the gateway. Both fill in kube/base.py's contracts."""

from .config import K8sConfig
from .gateway.client import GatewayDriver, GatewaySchedules
from .kube.base import Driver, Schedules
from .kube.clients import Clients
from .kube.driver import KubeDriver
from .kube.queue import Admitter
from .kube.schedules import KubeSchedules


def make_driver(cfg: K8sConfig, queued: bool = False) -> Driver:
    """The driver the configuration asks for: the jobs gateway's client in hub mode
    (K8sConfig.gateway_url), else the Kubernetes API with the configured credentials. In hub
    mode the gateway queues every job; in direct mode, with `queued`, the Jobs are made suspended
    for the caller's admitter (make_admitter)."""
    if cfg.gateway_url:
        if not cfg.gateway_token:
            raise ValueError("K8sConfig.gateway_url is set but there is no token for it "
                             "(K8sConfig.gateway_token, or $JUPYTERHUB_API_TOKEN)")
        return GatewayDriver(cfg.gateway_url, cfg.gateway_token)
    return KubeDriver(cfg, Clients(cfg.kubeconfig, cfg.context), queued=queued)


def make_admitter(driver: Driver, cfg: K8sConfig):
    """In direct mode, the queue of the server's own user, admitted by the server (started);
    in hub mode None: the gateway admits."""
    if not isinstance(driver, KubeDriver) or not driver.queued:
        return None
    return Admitter(driver.clients, driver.namespace, lambda: cfg.running_jobs_per_user, username=driver.owner,
                    elect=False).start()


def make_schedules(driver: Driver) -> Schedules:
    """Schedules through the same way as the driver: the jobs gateway's client in hub mode."""
    if isinstance(driver, KubeDriver):
        return KubeSchedules(driver)
    return GatewaySchedules(driver)
