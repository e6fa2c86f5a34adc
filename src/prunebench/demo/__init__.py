"""Build the offline demo assets: public-domain corpus, BPE tokenizer, trained demo Llama, local tasks.

One module per job: :mod:`.debian` reads Debian packages, :mod:`.corpus` builds the text splits,
:mod:`.tokenizer` trains the BPE tokenizer, :mod:`.train` trains the model, :mod:`.perplexity`
measures it, :mod:`.tasks` and :mod:`.wordnet` build the zero-shot tasks.
"""
