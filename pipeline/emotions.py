"""The emotion vocabulary every stage shares: FER2013's classes, the labels annotators choose from, and how
they map onto FER+'s vote columns.

Annotators choose one of FER2013's seven emotions, ``not_a_face`` or ``unsure``. A votes table has FER+'s
ten columns (``fer2013new.csv``: neutral ... contempt, unknown, NF), so our votes and FER+'s go through one
aggregation; ``contempt`` stays 0 for our own faces. It lives at the bottom of the import order (``pipeline``,
then ``annotation``, ``datasets``, ``models``) since all four use it.
"""

from __future__ import annotations

# FER2013's class order (its `emotion` column): the index is the class id used for training.
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
LABELS = [*EMOTIONS, "not_a_face", "unsure"]

# FER+'s vote columns, in fer2013new.csv's order, and which of our labels each one counts.
VOTE_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
COLUMN_OF_LABEL = {
    "neutral": "neutral", "happy": "happiness", "surprise": "surprise", "sad": "sadness", "angry": "anger",
    "disgust": "disgust", "fear": "fear", "contempt": "contempt", "unsure": "unknown", "not_a_face": "NF",
}
LABEL_OF_COLUMN = {column: label for label, column in COLUMN_OF_LABEL.items()}
# the vote columns that name an emotion (FER+'s first eight); "unknown" and "NF" do not
EMOTION_COLUMNS = VOTE_COLUMNS[:8]
