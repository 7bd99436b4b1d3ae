// Shared command-line conventions of the eep tools (CLI11): --version everywhere, every flag also
// from an EEP_* environment variable, --help to stdout with exit 0, usage errors to stderr with
// exit 2.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace eep::cli {

// Adds --version (prints "<tool> <version>" and exits 0).
void add_version_flag(CLI::App& app);

// Parses argv. Returns an exit code when the tool must stop now (0 after --help/--version, 2 after
// a usage error, which is printed to stderr as "<tool>: <message>"), or nullopt to continue.
std::optional<int> parse(CLI::App& app, int argc, char** argv);

}  // namespace eep::cli
