"""The one exception type of onnxslim: a one-line message and the exit code the CLI uses."""

BAD_INPUT = 2
FIDELITY_FAILED = 1


class SlimError(Exception):
    """A problem the user can act on. `str(err)` is one line; the CLI prints it and exits `exit_code`."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class SlimWarning(UserWarning):
    """Something odd in the input that onnxslim handles; the CLI prints it as one `onnxslim: warning:` line."""


class ValidationSkipped(SlimError):
    """Validation cannot run (onnxruntime cannot run the original, or no inputs can be made for it): the
    optimized model is still written, with the reason in the report."""
