#include "eep/cli.h"

#include <iostream>

#include "eep/common.h"

namespace eep::cli {

void add_version_flag(CLI::App& app) {
  app.set_version_flag("--version", app.get_name() + " " + kVersion);
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << "\n"
              << "Try '" << app.get_name() << " --help' for more information.\n";
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace eep::cli
