"""Strict request models: unknown fields, out-of-range values and oversized lists are 422s."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..search.params import ApproxParams

#: Bounds of one request (the body size is bounded separately, see ``ServeConfig.max_body_bytes``).
MAX_K = 1000
MAX_QUERIES = 256
MAX_TEXT_CHARS = 100_000
MAX_TERMS = 4096
MAX_DOCS = 10_000
MAX_ID_CHARS = 512

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
DocId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
TermWeights = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], Weight],
                        Field(max_length=MAX_TERMS)]
#: A query: a text to encode on the server, or a ``{term: weight}`` vector.
Query = Text | TermWeights


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApproxKnobs(Strict):
    """Per-query knobs of the approximate mode (see :class:`sparseir.search.ApproxParams`)."""

    source: Literal["impact", "full", "pruned"] = ApproxParams.source
    query_cut: int = Field(ApproxParams.query_cut, ge=1, le=MAX_TERMS)
    budget: int = Field(ApproxParams.budget, ge=0, le=100_000_000)
    candidates: int = Field(ApproxParams.candidates, ge=1, le=1_000_000)
    heap_factor: float = Field(ApproxParams.heap_factor, ge=0.0, le=1.0)


class SearchRequest(Strict):
    """One query (``query``) or a batch (``queries``: a list, or ``{qid: query}``)."""

    query: Query | None = None
    queries: (Annotated[list[Query], Field(min_length=1, max_length=MAX_QUERIES)]
              | Annotated[dict[DocId, Query], Field(min_length=1, max_length=MAX_QUERIES)] | None) = None
    k: int = Field(10, ge=1, le=MAX_K)
    approx: ApproxKnobs | None = Field(None, description="search approximately with these knobs (exact if absent)")
    explain: bool = Field(False, description="add each hit's contributing dimensions")
    explain_terms: int = Field(20, ge=1, le=MAX_TERMS, description="most contributions listed per hit")
    fields: list[Annotated[str, StringConstraints(max_length=256)]] | None = Field(
        None, max_length=64, description="stored fields to return with each hit, e.g. ['title', 'text']")

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' (one query) or 'queries' (a batch)")
        return self


class ExplainRequest(Strict):
    query: Query
    doc_id: DocId
    provenance: bool = Field(False, description="add each dimension's source words (character spans) in the "
                                                "query text and the stored document; needs a text query")

    @model_validator(mode="after")
    def _text_for_provenance(self) -> ExplainRequest:
        if self.provenance and not isinstance(self.query, str):
            raise ValueError("provenance needs a text query (source words are spans of its text)")
        return self


class EncodeRequest(Strict):
    """Texts to encode as queries (default) or as documents."""

    text: Text | None = None
    texts: Annotated[list[Text], Field(min_length=1, max_length=MAX_QUERIES)] | None = None
    kind: Literal["query", "document"] = "query"

    @model_validator(mode="after")
    def _one_of(self) -> EncodeRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' or 'texts'")
        return self


class DocumentIn(Strict):
    """A document to add: its text is encoded on the server unless ``vector`` is given."""

    id: DocId
    text: Text = ""
    title: Text = ""
    fields: dict[str, Any] | None = None
    vector: TermWeights | None = None


class AddRequest(Strict):
    documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=MAX_DOCS)]
    upsert: bool = Field(False, description="replace documents whose id exists (else an existing id is a 400)")
    commit: bool = Field(True, description="commit before answering (durable on success); false: call /commit")

    @model_validator(mode="after")
    def _vectors_all_or_none(self) -> AddRequest:
        with_vectors = sum(d.vector is not None for d in self.documents)
        if with_vectors not in (0, len(self.documents)):
            raise ValueError("give a 'vector' for every document of a request or for none")
        return self


class DeleteRequest(Strict):
    ids: Annotated[list[DocId], Field(min_length=1, max_length=MAX_DOCS)]
    commit: bool = True
