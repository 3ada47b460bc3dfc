"""The installed version of lightning-prune, in a leaf module: the file manifests record it, and
importing it must not import the whole package."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lightning-prune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
