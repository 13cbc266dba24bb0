// Filler text for the task generators: the sentences of a folder of .txt files (Paul Graham essays for
// needle-in-a-haystack by default) and the classic repeated passkey "noise" sentences. A loaded folder
// is cached for the life of the process (read-only, shared between threads).
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gsa::eval {

struct haystack {
  std::filesystem::path dir;
  std::vector<std::string> sentences;  // whitespace collapsed, in file-name order, each ending its sentence
};

// Loads (once) every regular *.txt file under `dir`, sorted by name. Throws gsa::error telling the user to
// pass --haystack DIR when the folder is missing or holds no text.
const haystack& load_haystack(const std::filesystem::path& dir);

// Sentence split of whitespace-collapsed text: a sentence ends at . ! or ? (plus closing quotes or
// brackets) followed by a space or the end of the text, or at a stop glued between a lowercase and an
// uppercase letter ("end.Next", a lost paragraph break).
std::vector<std::string> split_sentences(const std::string& text);
// The sentences one haystack file contributes: its text with whitespace collapsed, split as above.
std::vector<std::string> haystack_sentences(std::string_view file_text);

// The passkey filler: "The grass is green. The sky is blue. ..." one sentence per unit, repeating.
const std::vector<std::string>& noise_sentences();

}  // namespace gsa::eval
