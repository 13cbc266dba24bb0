// Random needle material (see task-parts.h). The word lists are small on purpose: a key only has to be
// unlikely to occur in the haystack and easy to tokenize.
#include "eval/task-parts.h"

#include <iterator>

namespace gsa::eval::detail {

namespace {

const char* const k_adjectives[] = {
    "amber",  "ancient", "bitter",  "brave",   "bright",  "calm",    "clever",  "crimson", "curious", "dusty",
    "eager",  "electric", "fading", "fierce",  "frozen",  "gentle",  "gilded",  "glassy",  "golden",  "hidden",
    "hollow", "humble",  "icy",     "jagged",  "jolly",   "lively",  "lonely",  "lucky",   "misty",   "modest",
    "narrow", "nimble",  "noisy",   "olive",   "orange",  "pale",    "patient", "polite",  "proud",   "quick",
    "quiet",  "rapid",   "rusty",   "scarlet", "shiny",   "silent",  "silver",  "sleepy",  "smooth",  "sour",
    "steady", "stormy",  "sturdy",  "sunny",   "swift",   "tender",  "tidy",    "timid",   "velvet",  "violet",
    "wandering", "wild", "windy",   "wooden",
};
const char* const k_nouns[] = {
    "anchor",  "badger",  "barrel",   "beacon",  "bramble", "canyon",  "castle",  "cedar",   "comet",   "copper",
    "cradle",  "dolphin", "dragon",   "falcon",  "feather", "fiddle",  "garden",  "glacier", "harbor",  "hammer",
    "helmet",  "island",  "jungle",   "kettle",  "lantern", "lemon",   "ladder",  "meadow",  "mirror",  "monsoon",
    "needle",  "oyster",  "paddle",   "parrot",  "pebble",  "pepper",  "pillow",  "pirate",  "planet",  "pocket",
    "puzzle",  "rabbit",  "ribbon",   "river",   "rocket",  "saddle",  "shadow",  "signal",  "spider",  "spoon",
    "squirrel", "statue", "teapot",   "thunder", "ticket",  "tiger",   "tunnel",  "turnip",  "umbrella", "valley",
    "walnut",  "whistle", "window",   "zebra",
};

}  // namespace

std::string random_key(rng& r) {
  std::string a = k_adjectives[r.below(std::size(k_adjectives))];
  return a + "-" + k_nouns[r.below(std::size(k_nouns))];
}

std::string random_number(rng& r, int digits) {
  std::string s(1, char('1' + r.below(9)));
  for (int i = 1; i < digits; i++) s += char('0' + r.below(10));
  return s;
}

std::string random_uuid(rng& r) {
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; i++) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    uint64_t v = r.below(16);
    if (i == 12) v = 4;                    // version
    if (i == 16) v = 8 + (v & 3);          // variant
    s += hex[v];
  }
  return s;
}

std::string random_var(rng& r) {
  std::string s;
  for (int i = 0; i < 5; i++) s += char('A' + r.below(26));
  return s;
}

uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t i) {
  // splitmix64-style mixing so nearby (seed, stream, i) give unrelated generator states.
  uint64_t z = seed ^ (stream * 0xD1B54A32D192ED03ull) ^ (i * 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace gsa::eval::detail
