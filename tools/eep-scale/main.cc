// eep-scale: placeholder until its subsystem lands.
#include "eep/cli.h"
#include "eep/common.h"

int main(int argc, char** argv) {
  CLI::App app{"eep-scale", "eep-scale"};
  eep::cli::add_version_flag(app);
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;
  return eep::kExitOk;
}
