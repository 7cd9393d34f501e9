from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import job_world

__all__ = ["fake_anthropic", "job_world"]
