// Accuracy-vs-length line plot as a self-contained SVG (no scripts, no external fonts or styles): one
// line per method label, the n-weighted mean score over everything else (filter records to one task for
// a per-task plot), y from 0 to 100 %, x on a log2 scale when the lengths span 4x or more.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "eval/results.h"

namespace gsa::eval {

struct plot_options {
  std::string title = "Accuracy vs context length";
  std::string x_label = "context length (tokens)";
  std::string y_label = "accuracy (%)";
  int width = 760, height = 440;
};

std::string plot_svg(const std::vector<result_record>& records, const plot_options& opt = {});
// Writes plot_svg to a file; throws gsa::error when the file cannot be written.
void write_plot_svg(const std::filesystem::path& file, const std::vector<result_record>& records,
                    const plot_options& opt = {});

}  // namespace gsa::eval
