"""Build the offline demo assets: public-domain corpus, BPE tokenizer, trained demo Llama, local tasks.

One module per job: :mod:`.debian` reads Debian packages, :mod:`.corpus` builds the text splits,
:mod:`.tokenizer` trains the BPE tokenizer, :mod:`.model` defines and saves the demo Llama,
:mod:`.train` trains it, :mod:`.evaluate` measures it (with the core perplexity), :mod:`.card` writes its
model card, :mod:`.text`, :mod:`.tasks` and :mod:`.wordnet` build the zero-shot tasks;
:mod:`.bible` builds a second evaluation text (``resources/texts/web``) from a SWORD Bible module;
:mod:`.entry` holds the shared command helpers.
"""
