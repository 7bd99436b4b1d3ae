// eep-eplb: load statistics in, expert placement plan out (man eep-eplb(1)).
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "eep/cli.h"
#include "eep/common.h"
#include "eep/eplb.h"

namespace {

std::string read_all(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), {});
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw eep::Error(eep::ErrorCode::kInvalidArgument, "cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw eep::Error(eep::ErrorCode::kInvalidArgument, "cannot read " + path);
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Computes an expert placement plan (which logical expert each physical slot holds) "
               "from per-expert load statistics. Every flag can also come from EEP_<FLAG>.",
               "eep-eplb"};
  eep::cli::add_version_flag(app);
  int gpus = 0, nodes = 1, groups = 1, slots = 0, redundant = -1;
  std::string algo = "default", current_path, format = "json", input = "-";
  double tolerance = 0.01;
  int64_t expert_bytes = 0;
  std::string keep_list;
  app.add_option("--gpus", gpus, "GPUs (EP ranks)")->required()->envname("EEP_GPUS");
  app.add_option("--nodes", nodes, "nodes; with groups divisible by nodes, each group's "
                 "replicas stay on one node")->envname("EEP_NODES");
  app.add_option("--groups", groups, "expert groups (group-limited routing)")
      ->envname("EEP_GROUPS");
  auto* slots_opt = app.add_option("--slots", slots, "physical expert slots in all")
                        ->envname("EEP_SLOTS");
  auto* red_opt = app.add_option("--redundant", redundant, "redundant slots: slots = experts + K")
                      ->envname("EEP_REDUNDANT");
  slots_opt->excludes(red_opt);
  app.add_option("--algo", algo, "deepseek or default")
      ->check(CLI::IsMember({"deepseek", "default"}))->envname("EEP_ALGO");
  app.add_option("--current", current_path, "current plan (JSON): move as few slots as possible; "
                 "it may have another GPU and slot count (scaling)")
      ->envname("EEP_CURRENT");
  app.add_option("--keep", keep_list, "with --current: comma-separated, for each new GPU the "
                 "current plan's GPU whose slots it inherits, -1 for a new GPU (default: the "
                 "same index)")
      ->envname("EEP_KEEP");
  app.add_option("--tolerance", tolerance, "relative balancedness loss allowed with --current")
      ->envname("EEP_TOLERANCE");
  app.add_option("--expert-bytes", expert_bytes, "bytes of one expert's weights")
      ->check(CLI::NonNegativeNumber)->envname("EEP_EXPERT_BYTES");
  app.add_option("--format", format, "json or table")
      ->check(CLI::IsMember({"json", "table"}))->envname("EEP_FORMAT");
  app.add_option("input", input, "load matrix: JSON {\"load\": [[...]]} or CSV; - is stdin")
      ->envname("EEP_INPUT");
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;

  try {
    if (slots_opt->count() == 0 && red_opt->count() == 0)
      throw eep::Error(eep::ErrorCode::kInvalidArgument, "one of --slots or --redundant is required");
    auto load = eep::eplb::parse_load(read_all(input));
    if (load.empty()) throw eep::Error(eep::ErrorCode::kInvalidArgument, "load matrix is empty");
    if (red_opt->count()) {
      if (redundant < 0)
        throw eep::Error(eep::ErrorCode::kInvalidArgument, "--redundant must not be negative");
      slots = static_cast<int>(load[0].size()) + redundant;
    }
    eep::eplb::Options options;
    options.num_gpus = gpus;
    options.num_nodes = nodes;
    options.num_groups = groups;
    options.num_slots = slots;
    options.algo = eep::eplb::parse_algo(algo);
    options.tolerance = tolerance;
    std::vector<int> keep;
    if (!keep_list.empty()) {
      std::stringstream items(keep_list);
      std::string item;
      while (std::getline(items, item, ',')) {
        size_t used = 0;
        int g = 0;
        try {
          g = std::stoi(item, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (item.empty() || used != item.size())
          throw eep::Error(eep::ErrorCode::kInvalidArgument,
                           "--keep: '" + item + "' is not an integer");
        keep.push_back(g);
      }
    }
    options.keep = keep;
    eep::eplb::Plan current;
    if (!current_path.empty()) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_all(current_path));
      } catch (const nlohmann::json::parse_error& e) {
        throw eep::Error(eep::ErrorCode::kInvalidArgument, "current plan " + current_path +
                                                               " is not valid JSON");
      }
      current = eep::eplb::Plan::from_json(j);
      options.current = &current;
    }
    auto plan = eep::eplb::rebalance(load, options);
    eep::eplb::Movement moved;
    if (options.current) moved = eep::eplb::movement(current, plan, expert_bytes, keep);
    const auto* mp = options.current ? &moved : nullptr;
    if (format == "table") {
      std::cout << eep::eplb::report_table(load, plan, mp);
    } else {
      std::cout << eep::eplb::report_json(load, plan, mp).dump() << "\n";
    }
  } catch (const eep::Error& e) {
    std::cerr << "eep-eplb: " << e.what() << "\n";
    return e.code() == eep::ErrorCode::kInvalidArgument ? eep::kExitUsage : eep::kExitRuntime;
  } catch (const std::exception& e) {
    std::cerr << "eep-eplb: " << e.what() << "\n";
    return eep::kExitRuntime;
  }
  return eep::kExitOk;
}
