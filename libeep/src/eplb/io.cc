// Load matrix parsing (JSON or CSV) and the tool's report formats.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

#include "eep/common.h"
#include "eep/eplb.h"

namespace eep::eplb {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorCode::kInvalidArgument, message);
}

std::vector<std::vector<double>> from_json_matrix(const nlohmann::json& m) {
  if (!m.is_array()) invalid("\"load\" is not an array of rows");
  std::vector<std::vector<double>> load;
  for (size_t l = 0; l < m.size(); ++l) {
    if (!m[l].is_array()) invalid("load row " + std::to_string(l) + " is not an array");
    std::vector<double> row;
    for (size_t e = 0; e < m[l].size(); ++e) {
      const auto& v = m[l][e];
      // JSON has no NaN/inf; a null is how some writers (Python json with allow_nan off) spell
      // them, so it is reported as not finite.
      if (v.is_null())
        invalid("load of layer " + std::to_string(l) + " expert " + std::to_string(e) +
                " is not finite");
      if (!v.is_number())
        invalid("load of layer " + std::to_string(l) + " expert " + std::to_string(e) +
                " is not a number");
      row.push_back(v.get<double>());
    }
    load.push_back(std::move(row));
  }
  return load;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

std::vector<std::vector<double>> from_csv(const std::string& text) {
  std::vector<std::vector<double>> load;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<double> row;
    std::istringstream cells(line);
    std::string cell;
    while (std::getline(cells, cell, ',')) {
      cell = trim(cell);
      // strtod accepts "nan" and "inf"; the finiteness check reports those precisely.
      char* end = nullptr;
      double v = std::strtod(cell.c_str(), &end);
      if (cell.empty() || end != cell.c_str() + cell.size())
        invalid("CSV line " + std::to_string(line_no) + ": '" + cell + "' is not a number");
      row.push_back(v);
    }
    if (!line.empty() && line.back() == ',')
      invalid("CSV line " + std::to_string(line_no) + " ends with an empty cell");
    load.push_back(std::move(row));
  }
  return load;
}

}  // namespace

std::vector<std::vector<double>> parse_load(const std::string& text) {
  std::string t = trim(text);
  size_t first = t.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) invalid("load matrix is empty");
  if (t[first] == '{' || t[first] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(t);
    } catch (const nlohmann::json::parse_error& e) {
      invalid(std::string("input is not valid JSON: ") + e.what());
    }
    if (j.is_object()) {
      if (!j.contains("load")) invalid("JSON input has no \"load\" field");
      return from_json_matrix(j.at("load"));
    }
    return from_json_matrix(j);
  }
  return from_csv(t);
}

nlohmann::json report_json(const std::vector<std::vector<double>>& load, const Plan& plan,
                           const Movement* movement) {
  auto j = plan.to_json();
  std::vector<double> per_layer;
  j["balancedness"] = balancedness(load, plan, &per_layer);
  j["balancedness_per_layer"] = per_layer;
  j["duplicate_replicas"] = duplicate_replicas(plan);
  if (movement) {
    j["moved_slots"] = movement->moved_slots;
    j["moved_bytes"] = movement->moved_bytes;
  }
  return j;
}

std::string report_table(const std::vector<std::vector<double>>& load, const Plan& plan,
                         const Movement* movement) {
  std::ostringstream out;
  char buf[256];
  std::vector<double> per_layer;
  double b = balancedness(load, plan, &per_layer);
  std::snprintf(buf, sizeof buf, "%d layers, %d experts, %d slots on %d GPUs (%d per GPU)\n",
                plan.num_layers, plan.num_logical, plan.num_slots, plan.num_gpus,
                plan.slots_per_gpu());
  out << buf;
  std::snprintf(buf, sizeof buf, "balancedness %.4f (mean GPU load / max GPU load)\n", b);
  out << buf;
  if (movement) {
    std::snprintf(buf, sizeof buf, "moved %lld slots (%.1f%%), %lld bytes\n",
                  static_cast<long long>(movement->moved_slots),
                  100.0 * movement->moved_slots / (double(plan.num_slots) * plan.num_layers),
                  static_cast<long long>(movement->moved_bytes));
    out << buf;
  }
  for (int l = 0; l < plan.num_layers; ++l) {
    auto loads = gpu_loads(load[l], plan.phy2log[l], plan.num_gpus);
    double mx = *std::max_element(loads.begin(), loads.end());
    std::snprintf(buf, sizeof buf, "\nlayer %d  balancedness %.4f\n%6s %12s %7s  %s\n", l,
                  per_layer[l], "gpu", "load", "of max", "experts");
    out << buf;
    int k = plan.slots_per_gpu();
    for (int g = 0; g < plan.num_gpus; ++g) {
      std::snprintf(buf, sizeof buf, "%6d %12.2f %6.1f%%  ", g, loads[g],
                    mx > 0 ? 100.0 * loads[g] / mx : 100.0);
      out << buf;
      for (int i = 0; i < k; ++i) out << (i ? " " : "") << plan.phy2log[l][g * k + i];
      out << "\n";
    }
  }
  return out.str();
}

}  // namespace eep::eplb
