// SVG line plot (see plot-svg.h). Plain SVG 1.1 elements only, so any browser renders the file as is.
#include "eval/plot-svg.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"

namespace gsa::eval {

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string length_label(int64_t l) {
  if (l >= 1024 * 1024 && l % (1024 * 1024) == 0) return fmt::format("{}M", l / (1024 * 1024));
  if (l >= 1024 && l % 1024 == 0) return fmt::format("{}k", l / 1024);
  return fmt::format("{}", l);
}

const char* const k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

}  // namespace

std::string plot_svg(const std::vector<result_record>& records, const plot_options& opt) {
  // Mean per (label, length), weighted by n, over tasks and depths.
  std::vector<std::string> labels;
  std::map<std::string, std::map<int64_t, std::pair<double, double>>> acc;  // label -> length -> (sum, w)
  std::set<int64_t> lengths;
  for (auto& r : records) {
    std::string label = method_label(r);
    if (std::find(labels.begin(), labels.end(), label) == labels.end()) labels.push_back(label);
    auto& cell = acc[label][r.length];
    double w = double(std::max<int64_t>(r.n, 0));
    cell.first += r.score * w;
    cell.second += w;
    lengths.insert(r.length);
  }
  const double W = opt.width, H = opt.height;
  const double left = 70, right = 170, top = 50, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  int64_t lo = lengths.empty() ? 1 : *lengths.begin(), hi = lengths.empty() ? 1 : *lengths.rbegin();
  bool log_x = lo > 0 && hi >= 4 * lo;
  auto xpos = [&](int64_t l) {
    if (hi == lo) return left + pw / 2;
    double t = log_x ? std::log2(double(l) / double(lo)) / std::log2(double(hi) / double(lo))
                     : double(l - lo) / double(hi - lo);
    return left + t * pw;
  };
  auto ypos = [&](double score) { return top + (1.0 - std::clamp(score, 0.0, 1.0)) * ph; };

  std::string s = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">{3}</text>\n",
      opt.width, opt.height, left + pw / 2, xml_escape(opt.title));
  // Horizontal grid and y ticks every 20 %.
  for (int p = 0; p <= 100; p += 20) {
    double y = ypos(p / 100.0);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", left, y,
                     left + pw, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 8, y + 4, p);
  }
  for (int64_t l : lengths) {
    double x = xpos(l);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#333\"/>\n", x,
                     top + ph, top + ph + 5);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x, top + ph + 20,
                     length_label(l));
  }
  // Axes and their labels.
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#333\"/>\n", left, top, top + ph);
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#333\"/>\n", left, top + ph, left + pw);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, H - 18,
                   xml_escape(opt.x_label + (log_x ? ", log scale" : "")));
  s += fmt::format("<text x=\"18\" y=\"{0:.1f}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {0:.1f})\">{1}</text>\n",
                   top + ph / 2, xml_escape(opt.y_label));
  // One polyline with point markers per method, and its legend entry.
  for (size_t i = 0; i < labels.size(); i++) {
    const char* color = k_colors[i % std::size(k_colors)];
    std::string points;
    std::string marks;
    for (auto& [l, sw] : acc[labels[i]]) {
      if (sw.second <= 0) continue;
      double x = xpos(l), y = ypos(sw.first / sw.second);
      points += fmt::format("{:.1f},{:.1f} ", x, y);
      marks += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", x, y, color);
    }
    if (!points.empty()) points.pop_back();
    s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, points);
    s += marks;
    double ly = top + 10 + 20 * double(i);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"{3}\" stroke-width=\"2\"/>\n",
                     left + pw + 16, ly, left + pw + 40, color);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", left + pw + 46, ly + 4, xml_escape(labels[i]));
  }
  s += "</svg>\n";
  return s;
}

void write_plot_svg(const std::filesystem::path& file, const std::vector<result_record>& records,
                    const plot_options& opt) {
  std::ofstream out(file, std::ios::binary);
  if (!out) fail("cannot write plot '{}': check that the folder exists and is writable", file.string());
  out << plot_svg(records, opt);
  if (!out) fail("failed writing plot '{}'", file.string());
}

}  // namespace gsa::eval
