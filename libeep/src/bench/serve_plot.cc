// SVG timeline of a serve report, written directly (no plotting dependency): output tokens/s on
// top, mean latency of the requests finishing in each bucket below, events as vertical lines with
// their during-windows shaded.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "bench/serve_report.h"

namespace eep::bench {

using nlohmann::json;

namespace {

constexpr double kWidth = 960, kPanelH = 220, kLeft = 80, kRight = 30, kTop = 40, kGap = 70;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` ticks over [0, hi].
double tick_step(double hi, int want) {
  if (!(hi > 0)) return 1;
  double raw = hi / want, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

std::string fmt(double v) {
  std::ostringstream s;
  s << (std::fabs(v - std::round(v)) < 1e-9 ? std::round(v) : v);
  return s.str();
}

struct Panel {
  double y0;  // top of the plot area
  double x_max, y_max;
  double x(double t) const { return kLeft + t / x_max * (kWidth - kLeft - kRight); }
  double y(double v) const { return y0 + kPanelH - v / y_max * kPanelH; }
};

void axes(std::ostringstream& o, const Panel& p, const std::string& title, const std::string& ylabel) {
  const double x1 = kWidth - kRight;
  o << "<text x=\"" << kLeft << "\" y=\"" << p.y0 - 8 << "\" font-size=\"14\" font-weight=\"bold\">"
    << esc(title) << "</text>\n";
  double ys = tick_step(p.y_max, 5);
  for (double v = 0; v <= p.y_max + 1e-9; v += ys) {
    o << "<line x1=\"" << kLeft << "\" x2=\"" << x1 << "\" y1=\"" << p.y(v) << "\" y2=\"" << p.y(v)
      << "\" stroke=\"#e4e4e4\"/>\n";
    o << "<text x=\"" << kLeft - 6 << "\" y=\"" << p.y(v) + 4 << "\" font-size=\"11\" text-anchor=\"end\">"
      << fmt(v) << "</text>\n";
  }
  double xs = tick_step(p.x_max, 10);
  for (double t = 0; t <= p.x_max + 1e-9; t += xs) {
    o << "<line x1=\"" << p.x(t) << "\" x2=\"" << p.x(t) << "\" y1=\"" << p.y0 + kPanelH << "\" y2=\""
      << p.y0 + kPanelH + 5 << "\" stroke=\"#333\"/>\n";
    o << "<text x=\"" << p.x(t) << "\" y=\"" << p.y0 + kPanelH + 18
      << "\" font-size=\"11\" text-anchor=\"middle\">" << fmt(t) << "</text>\n";
  }
  o << "<rect x=\"" << kLeft << "\" y=\"" << p.y0 << "\" width=\"" << x1 - kLeft << "\" height=\"" << kPanelH
    << "\" fill=\"none\" stroke=\"#333\"/>\n";
  o << "<text x=\"" << (kLeft + x1) / 2 << "\" y=\"" << p.y0 + kPanelH + 34
    << "\" font-size=\"12\" text-anchor=\"middle\">time since start of load (s)</text>\n";
  o << "<text transform=\"translate(18," << p.y0 + kPanelH / 2 << ") rotate(-90)\" font-size=\"12\" "
    << "text-anchor=\"middle\">" << esc(ylabel) << "</text>\n";
}

void events(std::ostringstream& o, const Panel& p, const json& evs, const json& rep, bool labels) {
  for (const auto& e : evs) {
    if (e["started_s"].is_null()) continue;
    double s = e["started_s"].get<double>();
    double d = e["done_s"].is_number() ? e["done_s"].get<double>() : rep.value("run_duration_s", s);
    std::string color = e.value("failed", false) ? "#c0392b" : "#e67e22";
    o << "<rect x=\"" << p.x(s) << "\" y=\"" << p.y0 << "\" width=\"" << std::max(1.0, p.x(d) - p.x(s))
      << "\" height=\"" << kPanelH << "\" fill=\"" << color << "\" fill-opacity=\"0.15\"/>\n";
    o << "<line x1=\"" << p.x(s) << "\" x2=\"" << p.x(s) << "\" y1=\"" << p.y0 << "\" y2=\""
      << p.y0 + kPanelH << "\" stroke=\"" << color << "\" stroke-width=\"1.5\"/>\n";
    if (labels)
      o << "<text x=\"" << p.x(s) + 4 << "\" y=\"" << p.y0 + 14 << "\" font-size=\"12\" fill=\"" << color
        << "\">" << esc(e.value("label", "")) << (e.value("failed", false) ? " (failed)" : "")
        << "</text>\n";
  }
}

}  // namespace

std::string render_svg(const json& rep) {
  const json& tl = rep["timeline"];
  const double bucket = rep.value("timeline_bucket_s", 0.1);
  double x_max = std::max(rep.value("run_duration_s", 1.0), bucket);
  std::vector<double> tps, lat;
  double tps_max = 1, lat_max = 1;
  for (const auto& b : tl) {
    tps.push_back(b.value("output_tokens_per_s", 0.0));
    lat.push_back(b["mean_latency_ms"].is_number() ? b["mean_latency_ms"].get<double>() : NAN);
  }
  // A 1 s moving average on top of the raw 100 ms buckets: the raw line is too jagged to read.
  int half = std::max(1, static_cast<int>(std::lround(0.5 / bucket)));
  std::vector<double> smooth(tps.size(), 0);
  for (size_t i = 0; i < tps.size(); ++i) {
    double sum = 0;
    int n = 0;
    for (int k = -half; k < half; ++k) {
      long j = static_cast<long>(i) + k;
      if (j < 0 || j >= static_cast<long>(tps.size())) continue;
      sum += tps[j];
      ++n;
    }
    smooth[i] = n ? sum / n : 0;
  }
  for (double v : tps) tps_max = std::max(tps_max, v);
  for (double v : lat)
    if (std::isfinite(v)) lat_max = std::max(lat_max, v);
  Panel top{kTop, x_max, tps_max * 1.1};
  Panel bottom{kTop + kPanelH + kGap, x_max, lat_max * 1.1};
  const double height = bottom.y0 + kPanelH + 50;

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << kWidth << " " << height << "\" font-family=\"sans-serif\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  const json& evs = rep["events"];
  events(o, top, evs, rep, true);
  events(o, bottom, evs, rep, false);
  axes(o, top, "output tokens/s (" + fmt(bucket * 1000) + " ms buckets; dark: 1 s average)", "tokens/s");
  axes(o, bottom, "mean end-to-end latency of requests finishing in each bucket", "latency (ms)");
  auto poly = [&](const Panel& p, const std::vector<double>& v, const char* color, double width) {
    o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"" << width << "\" points=\"";
    for (size_t i = 0; i < v.size(); ++i)
      o << p.x((static_cast<double>(i) + 0.5) * bucket) << "," << p.y(v[i]) << " ";
    o << "\"/>\n";
  };
  poly(top, tps, "#9dc3e6", 1);
  poly(top, smooth, "#1f4e79", 2);
  for (size_t i = 0; i < lat.size(); ++i)
    if (std::isfinite(lat[i]))
      o << "<circle cx=\"" << bottom.x((static_cast<double>(i) + 0.5) * bucket) << "\" cy=\""
        << bottom.y(lat[i]) << "\" r=\"2\" fill=\"#2e7d32\"/>\n";
  o << "</svg>\n";
  return o.str();
}

}  // namespace eep::bench
