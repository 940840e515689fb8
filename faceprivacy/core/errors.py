"""Exception types: every user-facing failure is a FacePrivacyError so the CLI can print one clear line."""


class FacePrivacyError(Exception):
    """Base class for errors that are the user's input, not a bug (CLI exits non-zero, no traceback)."""


class InputError(FacePrivacyError):
    """The input file or argument is unreadable, corrupt, too large or of the wrong kind."""


class NoFaceError(FacePrivacyError):
    """No face was found where one was required."""


class AuthenticationError(FacePrivacyError):
    """A sealed record failed authentication (wrong passphrase or tampered data)."""


class ModelLoadError(FacePrivacyError):
    """A weights/checkpoint file is missing, corrupt or of an unexpected layout."""
