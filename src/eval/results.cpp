// Result tables (see results.h).
#include "eval/results.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json-util.h"
#include "eval/metrics.h"

namespace gsa::eval {

std::string method_label(const result_record& r) {
  return r.ratio > 0 ? fmt::format("{} {:g}x", r.method, r.ratio) : r.method;
}

void routing_mean::add(double mean_figure, double any_figure, const std::vector<double>& layers, double w) {
  mean += mean_figure * w;
  any += std::max(0.0, any_figure) * w;
  weight += w;
  if (layer.size() < layers.size()) layer.resize(layers.size(), 0.0), layer_weight.resize(layers.size(), 0.0);
  for (size_t l = 0; l < layers.size(); l++)
    if (layers[l] >= 0) layer[l] += layers[l] * w, layer_weight[l] += w;
}

void routing_mean::put(result_record& r) const {
  r.routing = weight > 0 ? mean / weight : -1.0;
  r.routing_any = weight > 0 ? any / weight : -1.0;
  r.routing_layers.clear();
  for (size_t l = 0; l < layer.size(); l++)
    r.routing_layers.push_back(layer_weight[l] > 0 ? layer[l] / layer_weight[l] : -1.0);
}

std::vector<result_record> aggregate_depths(const std::vector<result_record>& records) {
  std::vector<result_record> out;
  std::map<std::tuple<std::string, std::string, double, int64_t>, size_t> index;
  std::vector<double> weight;
  std::vector<routing_mean> routing;
  for (auto& r : records) {
    auto key = std::make_tuple(r.task, r.method, r.ratio, r.length);
    auto it = index.find(key);
    if (it == index.end()) {
      it = index.emplace(key, out.size()).first;
      out.push_back(r);
      out.back().depth = 0;
      out.back().score = 0;
      out.back().n = 0;
      out.back().routing_n = 0;
      weight.push_back(0);
      routing.emplace_back();
    }
    result_record& a = out[it->second];
    double w = double(std::max<int64_t>(r.n, 0));
    a.score += r.score * w;
    a.n += r.n;
    weight[it->second] += w;
    if (r.routing >= 0 && r.routing_n > 0) {
      routing[it->second].add(r.routing, r.routing_any, r.routing_layers, double(r.routing_n));
      a.routing_n += r.routing_n;
    }
  }
  for (size_t i = 0; i < out.size(); i++) {
    out[i].score = weight[i] > 0 ? out[i].score / weight[i] : 0.0;
    routing[i].put(out[i]);
  }
  return out;
}

namespace {

// Rows (task, method, ratio) in first-appearance order, columns the lengths and their mean; `value` gives a
// cell's figure in [0, 1] or a negative number for none. Rows without any figure are left out.
template <class Value>
std::string length_table(const std::vector<result_record>& cells, Value value, bool ci = false) {
  std::set<int64_t> lengths;
  for (auto& c : cells) lengths.insert(c.length);
  std::vector<std::tuple<std::string, std::string, double>> rows;
  std::map<std::tuple<std::string, std::string, double, int64_t>, std::pair<double, int64_t>> at;
  for (auto& c : cells) {
    const double v = value(c);
    if (v < 0) continue;
    auto row = std::make_tuple(c.task, c.method, c.ratio);
    if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
    at[std::make_tuple(c.task, c.method, c.ratio, c.length)] = {v, c.n};
  }
  std::string out = "| task | method |";
  std::string rule = "|---|---|";
  for (int64_t l : lengths) {
    out += fmt::format(" {} |", l);
    rule += "---:|";
  }
  out += " avg |\n" + rule + "---:|\n";
  for (auto& [task, method, ratio] : rows) {
    result_record label{task, method, ratio};
    out += fmt::format("| {} | {} |", task, method_label(label));
    double sum = 0;
    int count = 0;
    for (int64_t l : lengths) {
      auto it = at.find(std::make_tuple(task, method, ratio, l));
      if (it == at.end()) {
        out += " - |";
      } else {
        const double v = it->second.first;
        if (ci) {
          const interval w = wilson_interval(std::clamp(v, 0.0, 1.0), it->second.second);
          out += fmt::format(" {:.1f} ({:.0f}-{:.0f}) |", 100 * v, 100 * w.low, 100 * w.high);
        } else {
          out += fmt::format(" {:.1f} |", 100 * v);
        }
        sum += v;
        count++;
      }
    }
    out += fmt::format(" {:.1f} |\n", count ? 100 * sum / count : 0.0);
  }
  return out;
}

}  // namespace

std::string results_markdown(const std::vector<result_record>& records, bool ci) {
  auto cells = aggregate_depths(records);
  std::string out = length_table(cells, [](const result_record& c) { return c.score; }, ci);
  if (ci) out += "\n(in parentheses: the 95% Wilson interval over the cell's samples)\n";
  const bool routed = std::any_of(cells.begin(), cells.end(), [](auto& c) { return c.routing_n > 0; });
  if (!routed) return out;
  out += "\nNeedle selected: % of the (layer, KV head) selections at the question's last row that picked a chunk "
         "or page holding the answer\n\n" +
         length_table(cells, [](const result_record& c) { return c.routing_n > 0 ? c.routing : -1.0; });
  out += "\nNeedle selected anywhere: % of the samples where at least one (layer, KV head) selection at the "
         "question's last row picked it\n\n" +
         length_table(cells, [](const result_record& c) { return c.routing_n > 0 ? c.routing_any : -1.0; });
  // Per layer: rows (task, method, length), columns the layers ("-": the layer never selected).
  size_t n_layers = 0;
  for (auto& c : cells)
    if (c.routing_n > 0) n_layers = std::max(n_layers, c.routing_layers.size());
  if (n_layers == 0) return out;
  out += "\nNeedle selected per layer: % of the layer's KV-head selections that picked it\n\n| task | method | "
         "length |";
  std::string rule = "|---|---|---:|";
  for (size_t l = 0; l < n_layers; l++) {
    out += fmt::format(" L{} |", l);
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (auto& c : cells) {
    if (c.routing_n <= 0 || c.routing_layers.empty()) continue;
    out += fmt::format("| {} | {} | {} |", c.task, method_label(c), c.length);
    for (size_t l = 0; l < n_layers; l++) {
      const double v = l < c.routing_layers.size() ? c.routing_layers[l] : -1.0;
      out += v >= 0 ? fmt::format(" {:.0f} |", 100 * v) : std::string(" - |");
    }
    out += "\n";
  }
  return out;
}

std::string results_json(const std::vector<result_record>& records) {
  nlohmann::json a = nlohmann::json::array();
  for (auto& r : records) {
    nlohmann::json o = {{"task", r.task}, {"method", r.method}, {"ratio", r.ratio}, {"length", r.length},
                        {"depth", r.depth}, {"score", r.score}, {"n", r.n}};
    const interval w = wilson_interval(std::clamp(r.score, 0.0, 1.0), r.n);
    o["ci95"] = {w.low, w.high};
    if (r.routing_n > 0) {
      o["routing"] = r.routing;
      o["routing_n"] = r.routing_n;
      if (r.routing_any >= 0) o["routing_any"] = r.routing_any;
      if (!r.routing_layers.empty()) o["routing_layers"] = r.routing_layers;
    }
    a.push_back(std::move(o));
  }
  return a.dump(1);
}

std::vector<result_record> parse_results_json(std::string_view text) {
  const auto a = parse_json(text, "results");
  if (!a.is_array()) fail("results: expected a JSON array of records");
  std::vector<result_record> out;
  for (size_t i = 0; i < a.size(); i++) {
    const auto& o = a[i];
    try {
      result_record r;
      r.task = o.at("task").get<std::string>();
      r.method = o.at("method").get<std::string>();
      r.ratio = o.value("ratio", 0.0);
      r.length = o.at("length").get<int64_t>();
      r.depth = o.value("depth", 0.0);
      r.score = o.at("score").get<double>();
      r.n = o.value("n", int64_t(1));
      r.routing_n = o.value("routing_n", int64_t(0));
      r.routing = r.routing_n > 0 ? o.at("routing").get<double>() : -1.0;
      if (r.routing_n > 0) {
        r.routing_any = o.value("routing_any", -1.0);
        r.routing_layers = o.value("routing_layers", std::vector<double>{});
      }
      out.push_back(std::move(r));
    } catch (const nlohmann::json::exception& e) {
      fail("results: record {} needs task, method, length, score (and optionally ratio, depth, n, routing with "
           "routing_n): {}", i, e.what());
    }
  }
  return out;
}

}  // namespace gsa::eval
