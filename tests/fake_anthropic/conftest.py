from .fixtures import cli_workspace, fake_anthropic

__all__ = ["cli_workspace", "fake_anthropic"]
