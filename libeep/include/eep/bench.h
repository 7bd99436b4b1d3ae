// eep-bench subcommands implemented in libeep. Each takes the arguments after the subcommand
// name and returns an exit code (0 ok, 1 runtime failure, 2 usage or bad input).
#pragma once

namespace eep::bench {

// eep-bench replay [--coord ADDR] [FILE|-]: JSON-lines requests in, one JSON line per finished
// request out.
int run_replay(int argc, char** argv);

// eep-bench serve: load (Poisson or closed loop) with scaling/kill events; figures and plot.
int run_serve(int argc, char** argv);

}  // namespace eep::bench
