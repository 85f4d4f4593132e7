"""kube/base.py: both modes fill in the same contracts. Each driver and each schedules class
defines every method of its contract itself (an inherited Protocol method would silently do
nothing), with the contract's parameters, in its order and with its defaults; a parameter of its
own must have a default, so that the lifecycle's calls work in both modes."""
import inspect

import pytest

from jupyter_scheduler_k8s.gateway.client import GatewayDriver, GatewaySchedules
from jupyter_scheduler_k8s.kube.base import Driver, Schedules
from jupyter_scheduler_k8s.kube.driver import KubeDriver
from jupyter_scheduler_k8s.kube.schedules import KubeSchedules

# Written once in the contract, for every driver.
SHARED = {"wait_for_pod"}


def methods(protocol) -> dict:
    return {name: fn for name, fn in vars(protocol).items() if inspect.isfunction(fn) and not name.startswith("_")}


def differences(contract_fn, fn) -> list:
    expected = list(inspect.signature(contract_fn).parameters.values())
    actual = inspect.signature(fn).parameters
    problems = [f"no parameter {p.name}" for p in expected if p.name not in actual]
    names = [name for name in actual if name in {p.name for p in expected}]
    if names != [p.name for p in expected if p.name in actual]:
        problems.append(f"parameters in another order: {list(actual)}")
    problems += [f"{p.name} defaults to {actual[p.name].default!r}, not {p.default!r}"
                 for p in expected if p.name in actual and actual[p.name].default != p.default
                 and not (callable(p.default) and callable(actual[p.name].default))]
    problems += [f"{name} has no default" for name, p in actual.items()
                 if name not in {q.name for q in expected} and p.default is inspect.Parameter.empty
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return problems


@pytest.mark.parametrize("protocol,cls", [(Driver, KubeDriver), (Driver, GatewayDriver),
                                          (Schedules, KubeSchedules), (Schedules, GatewaySchedules)],
                         ids=lambda x: x.__name__)
def test_each_class_fills_in_its_contract(protocol, cls):
    assert protocol in cls.__mro__
    problems = {}
    for name, contract_fn in methods(protocol).items():
        if name in SHARED:
            assert name not in vars(cls), f"{cls.__name__}.{name} is written again"
            continue
        if name not in vars(cls):
            problems[name] = ["not defined"]
        elif found := differences(contract_fn, vars(cls)[name]):
            problems[name] = found
    assert problems == {}


def test_a_contract_method_left_out_is_caught():
    class Partial(Driver):
        def create(self, job, profile, timeout_seconds, extra):
            pass
    assert differences(Driver.create, Partial.create) == ["extra has no default"]
    assert "read_job" not in vars(Partial)
    assert differences(Driver.delete, lambda self, job_id, collector=True, keep_volume=False: None) == [
        "parameters in another order: ['self', 'job_id', 'collector', 'keep_volume']"]
