// Result tables and the SVG plot.
#include "core/error.h"
#include "eval/metrics.h"
#include "eval/plot-svg.h"
#include "eval/results.h"
#include "test-util.h"

using namespace gsa::eval;

namespace {

std::vector<result_record> records() {
  return {
      {"passkey", "gsa", 8, 4096, 0.0, 1.0, 1},
      {"passkey", "gsa", 8, 4096, 1.0, 0.6, 3},
      {"passkey", "gsa", 8, 8192, 0.5, 0.25, 2},
      {"passkey", "full", 0, 4096, 0.5, 0.9, 4},
  };
}

size_t occurrences(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = s.find(what, p)) != std::string::npos; p++) n++;
  return n;
}

}  // namespace

// Reference values: the Wilson score interval as statistics texts tabulate it (e.g. 8 of 10 at 95%: 0.490-0.943).
TEST(results, wilson_interval_known_values) {
  struct ref {
    double p;
    int64_t n;
    double lo, hi;
  };
  for (const ref& r : {ref{0.8, 10, 0.4902, 0.9433}, ref{0.0, 10, 0.0, 0.2775}, ref{1.0, 10, 0.7225, 1.0},
                       ref{0.5, 100, 0.4038, 0.5962}, ref{0.9, 50, 0.7864, 0.9565}}) {
    const interval w = wilson_interval(r.p, r.n);
    EXPECT_NEAR(w.low, r.lo, 1e-4) << r.p << " of " << r.n;
    EXPECT_NEAR(w.high, r.hi, 1e-4) << r.p << " of " << r.n;
  }
  const interval none = wilson_interval(0.5, 0);
  EXPECT_EQ(none.low, 0.0);
  EXPECT_EQ(none.high, 1.0);
  EXPECT_THROW(wilson_interval(1.5, 10), gsa::error);
  EXPECT_THROW(wilson_interval(0.5, 10, -1), gsa::error);
}

TEST(results, markdown_with_intervals_and_json) {
  const std::string md = results_markdown(records(), true);
  // gsa 8x: 0.7 over 4 samples at 4096 -> Wilson 95% [0.2666, 0.9374], 0.25 over 2 at 8192 -> [0.0267, 0.8021];
  // full: 0.9 over 4 -> [0.4168, 0.9913].
  EXPECT_NE(md.find("| passkey | gsa 8x | 70.0 (27-94) | 25.0 (3-80) | 47.5 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| passkey | full | 90.0 (42-99) | - | 90.0 |"), std::string::npos) << md;
  const std::string js = results_json(records());
  EXPECT_NE(js.find("\"ci95\""), std::string::npos);
  EXPECT_EQ(parse_results_json(js).size(), records().size()) << "the interval does not disturb parsing";
}

TEST(results, aggregate_and_markdown) {
  auto cells = aggregate_depths(records());
  ASSERT_EQ(cells.size(), 3u);
  // 4096: (1.0 * 1 + 0.6 * 3) / 4 = 0.7 over 4 samples.
  EXPECT_NEAR(cells[0].score, 0.7, 1e-12);
  EXPECT_EQ(cells[0].n, 4);
  std::string md = results_markdown(records());
  // gsa avg over lengths: (0.7 + 0.25) / 2 = 0.475.
  EXPECT_EQ(md,
            "| task | method | 4096 | 8192 | avg |\n"
            "|---|---|---:|---:|---:|\n"
            "| passkey | gsa 8x | 70.0 | 25.0 | 47.5 |\n"
            "| passkey | full | 90.0 | - | 90.0 |\n");
}

TEST(results, json_round_trip) {
  auto recs = records();
  auto back = parse_results_json(results_json(recs));
  ASSERT_EQ(back.size(), recs.size());
  for (size_t i = 0; i < recs.size(); i++) {
    EXPECT_EQ(back[i].task, recs[i].task);
    EXPECT_EQ(back[i].method, recs[i].method);
    EXPECT_EQ(back[i].ratio, recs[i].ratio);
    EXPECT_EQ(back[i].length, recs[i].length);
    EXPECT_EQ(back[i].depth, recs[i].depth);
    EXPECT_EQ(back[i].score, recs[i].score);
    EXPECT_EQ(back[i].n, recs[i].n);
  }
  EXPECT_THROW(parse_results_json(R"([{"task": "x"}])"), gsa::error);
  EXPECT_THROW(parse_results_json("{}"), gsa::error);
}

TEST(results, svg_plot) {
  auto recs = records();
  recs.push_back({"passkey", "a<b", 0, 8192, 0.5, 0.5, 1});
  std::string svg = plot_svg(recs, {.title = "passkey"});
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(occurrences(svg, "<polyline"), 3u);
  EXPECT_EQ(occurrences(svg, "<circle"), 4u);  // gsa 2 points, full 1, a<b 1
  EXPECT_NE(svg.find(">gsa 8x</text>"), std::string::npos);
  EXPECT_NE(svg.find(">a&lt;b</text>"), std::string::npos);
  EXPECT_NE(svg.find(">4k</text>"), std::string::npos);
  EXPECT_NE(svg.find(">8k</text>"), std::string::npos);
  // Default size 760x440, margins left 70 / right 170 / top 50 / bottom 60: plot 520 x 330.
  // gsa at 4096 scores 0.7 -> y = 50 + 0.3 * 330 = 149; two lengths (2x, linear x) -> x = 70 and 590.
  EXPECT_NE(svg.find("points=\"70.0,149.0 590.0,297.5\""), std::string::npos) << svg;
}

TEST(results, routing_is_averaged_over_measured_samples_and_tabled) {
  auto recs = records();
  recs[0].routing = 1.0, recs[0].routing_n = 1;  // 4096, depth 0
  recs[1].routing = 0.2, recs[1].routing_n = 2;  // 4096, depth 1: 2 of its 3 samples measured
  auto cells = aggregate_depths(recs);
  // (1.0 * 1 + 0.2 * 2) / 3; the 8192 cell and full measured nothing.
  EXPECT_NEAR(cells[0].routing, 1.4 / 3, 1e-12);
  EXPECT_EQ(cells[0].routing_n, 3);
  EXPECT_EQ(cells[1].routing_n, 0);
  EXPECT_LT(cells[1].routing, 0);
  EXPECT_LT(cells[2].routing, 0);
  const std::string md = results_markdown(recs);
  const size_t second = md.find("Needle selected");
  ASSERT_NE(second, std::string::npos) << md;
  const size_t table = md.find('\n', second) + 2;
  EXPECT_EQ(md.substr(table, md.find("\nNeedle selected anywhere") - table),
            "| task | method | 4096 | 8192 | avg |\n"
            "|---|---|---:|---:|---:|\n"
            "| passkey | gsa 8x | 46.7 | - | 46.7 |\n");
  // Records without the any / per-layer figures (older JSON): "anywhere" reads 0, no per-layer table.
  EXPECT_EQ(md.find("per layer"), std::string::npos) << md;
  EXPECT_EQ(results_markdown(records()).find("Needle selected"), std::string::npos);
  auto back = parse_results_json(results_json(recs));
  ASSERT_EQ(back.size(), recs.size());
  for (size_t i = 0; i < recs.size(); i++) {
    EXPECT_EQ(back[i].routing_n, recs[i].routing_n);
    EXPECT_EQ(back[i].routing, recs[i].routing_n ? recs[i].routing : -1.0);
  }
}


// The two other views of the same selections (infer::needle_routing_of): "any" and per layer, averaged like the
// mean (by routing_n; a layer that never selected stays out of its own average), tabled, and kept by the JSON.
TEST(results, routing_any_and_per_layer_are_averaged_and_tabled) {
  auto recs = records();
  recs[0].routing = 0.5, recs[0].routing_n = 1, recs[0].routing_any = 1.0;  // 4096, depth 0
  recs[0].routing_layers = {-1.0, 0.25, 0.75};
  recs[1].routing = 0.1, recs[1].routing_n = 3, recs[1].routing_any = 1.0 / 3;  // 4096, depth 1
  recs[1].routing_layers = {-1.0, 0.0, 0.2};
  auto cells = aggregate_depths(recs);
  EXPECT_NEAR(cells[0].routing_any, (1.0 + 1.0) / 4, 1e-12);
  ASSERT_EQ(cells[0].routing_layers.size(), 3u);
  EXPECT_LT(cells[0].routing_layers[0], 0);
  EXPECT_NEAR(cells[0].routing_layers[1], 0.25 / 4, 1e-12);
  EXPECT_NEAR(cells[0].routing_layers[2], (0.75 + 0.6) / 4, 1e-12);
  const std::string md = results_markdown(recs);
  const size_t any = md.find("Needle selected anywhere");
  ASSERT_NE(any, std::string::npos) << md;
  const size_t any_table = md.find('\n', any) + 2;
  EXPECT_EQ(md.substr(any_table, md.find("\nNeedle selected per layer") - any_table),
            "| task | method | 4096 | 8192 | avg |\n"
            "|---|---|---:|---:|---:|\n"
            "| passkey | gsa 8x | 50.0 | - | 50.0 |\n");
  const size_t per = md.find("Needle selected per layer");
  ASSERT_NE(per, std::string::npos) << md;
  EXPECT_EQ(md.substr(md.find('\n', per) + 2),
            "| task | method | length | L0 | L1 | L2 |\n"
            "|---|---|---:|---:|---:|---:|\n"
            "| passkey | gsa 8x | 4096 | - | 6 | 34 |\n");
  auto back = parse_results_json(results_json(recs));
  ASSERT_EQ(back.size(), recs.size());
  for (size_t i = 0; i < recs.size(); i++) {
    EXPECT_EQ(back[i].routing_any, recs[i].routing_n ? recs[i].routing_any : -1.0);
    EXPECT_EQ(back[i].routing_layers, recs[i].routing_n ? recs[i].routing_layers : std::vector<double>{});
  }
}
