"""Suite-wide plugins: under CI a skip is a failure (tests/support/ci_skips.py); pytester for the
test of that rule."""

pytest_plugins = ["tests.support.ci_skips", "pytester"]
