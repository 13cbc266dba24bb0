// Evaluation results: one record per (task, method, ratio, length, depth) cell holding the mean score of its n
// samples (and, for selecting methods, how often their selection held the needle). Renders the markdown table of
// a report (rows task x method, columns lengths, cells the n-weighted mean over depths in percent, plus the mean
// over lengths) and a JSON array of the records.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gsa::eval {

struct result_record {
  std::string task, method;
  double ratio = 0;    // compression ratio r = c / g; 0 for methods without one (full)
  int64_t length = 0;  // context length in tokens
  double depth = 0;    // needle depth fraction
  double score = 0;    // mean score in [0, 1]
  int64_t n = 1;       // samples behind the mean
  // Routing: the mean over the samples where it was measured (routing_n of them) of the fraction of the
  // (layer, KV head) selections at the question's last row that picked a chunk or page holding the answer
  // (infer::needle_hit); -1 when not measured (methods that do not select, answers not in the context).
  double routing = -1;
  int64_t routing_n = 0;
  // Over the same samples: the fraction where at least one (layer, KV head) selection held the answer, and per
  // layer the mean of its own figure (-1: the layer never selected); infer::needle_routing_of.
  double routing_any = -1;
  std::vector<double> routing_layers = {};
};

// Weighted means of the routing figures, over samples (run_eval: weight 1 each) or records (aggregate_depths:
// weight routing_n): the mean, "any" (a missing one, -1, counts as 0) and per layer (a layer counts only where it
// has a figure, >= 0).
struct routing_mean {
  double mean = 0, any = 0, weight = 0;
  std::vector<double> layer, layer_weight;
  void add(double mean_figure, double any_figure, const std::vector<double>& layers, double w);
  // r.routing, r.routing_any and r.routing_layers: the means, -1 where nothing was added (routing_n is the
  // caller's).
  void put(result_record& r) const;
};

// "gsa 8x" / "full": the row label of a method at its ratio.
std::string method_label(const result_record& r);

// Per (task, method, ratio, length): the n-weighted mean over depths; first-appearance order.
std::vector<result_record> aggregate_depths(const std::vector<result_record>& records);

// The accuracy table; when any record measured routing, tables of the routing figures follow (the mean over
// layers and KV heads, at least one, and per layer at each length). ci: each
// accuracy cell also shows its 95% Wilson interval over the cell's n samples, "70.0 (39-89)" (metrics.h).
std::string results_markdown(const std::vector<result_record>& records, bool ci = false);
// Each record also carries "ci95": [low, high], the 95% Wilson interval of its score over its n samples.
std::string results_json(const std::vector<result_record>& records);
// Parses results_json's output back; throws gsa::error naming the bad element.
std::vector<result_record> parse_results_json(std::string_view text);

}  // namespace gsa::eval
