"""The labels annotators choose from, how they map onto FER+'s vote columns, and the labelling config.

Annotators choose one of FER2013's seven emotions, ``not_a_face`` or ``unsure``. A votes table has
FER+'s ten columns (``fer2013new.csv``: neutral ... contempt, unknown, NF), so our votes and FER+'s go
through one aggregation; ``contempt`` stays 0 for our own faces.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

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

HOTKEYS = {"angry": "a", "disgust": "d", "fear": "f", "happy": "h", "sad": "s", "surprise": "u", "neutral": "n",
           "contempt": "c", "not_a_face": "x", "unsure": "q"}
INSTRUCTIONS = (
    "Choose the emotion the face shows. Choose not_a_face if there is no human face, and unsure if the "
    "face is too small, blurred or hidden to tell. One choice per face; the hotkey is in brackets."
)


def label_config(labels: list[str] = LABELS) -> str:
    """Label Studio's labelling config: the face, one required single choice among ``labels``."""
    choices = "\n".join(
        f'    <Choice value="{label}" hotkey="{HOTKEYS[label]}" hint="{label.replace("_", " ")}"/>' for label in labels
    )
    return f"""<View>
  <Header value="{escape(INSTRUCTIONS)}"/>
  <Image name="image" value="$image" maxWidth="448px"/>
  <Text name="face_id" value="$face_id"/>
  <Choices name="emotion" toName="image" choice="single" required="true" showInline="true">
{choices}
  </Choices>
</View>
"""


def labels_in_config(config: str) -> list[str]:
    """The choice values of a labelling config (to notice a config changed under existing annotations)."""
    return [c.get("value") for c in ET.fromstring(config).iter("Choice")]
