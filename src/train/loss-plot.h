// Loss curves as a self-contained SVG line plot (no scripts, fonts or styles from outside): one polyline per
// series over a shared step axis, linear axes with a few labelled ticks. eval/plot-svg.h draws accuracy vs
// context length; this one draws loss vs step.
#pragma once
#include <string>
#include <vector>

namespace gsa {

struct loss_series {
  std::string name, color;               // color: any SVG color ("#1f77b4")
  std::vector<std::pair<double, double>> points;  // (step, loss)
};

std::string loss_plot_svg(const std::vector<loss_series>& series, const std::string& title);
// Written atomically; throws gsa::error when the file cannot be written.
void write_loss_plot(const std::string& path, const std::vector<loss_series>& series, const std::string& title);

}  // namespace gsa
