"""Label Studio's labelling config for the labels of ``pipeline.emotions``: one hotkey per choice, the
instructions annotators read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from pipeline.emotions import LABELS

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
