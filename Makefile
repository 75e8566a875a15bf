# Entry points for humans and CI. Each target delegates to a script so it also works without make.
.PHONY: package test lint demo

# Sets up .venv and the Debian test dependencies, lints, then runs the whole test suite.
test:
	scripts/test

# ruff and mypy as scripts/test runs them (needs the .venv that scripts/setup.sh test makes).
lint:
	scripts/lint

# Sets up .venv and runs the forwarder end to end on the built-in demo.
demo:
	scripts/demo

# Builds dist/siem-forwarder_<version>-1_amd64.deb and the .rpm (needs root; see packaging/build.sh).
package:
	packaging/build.sh
