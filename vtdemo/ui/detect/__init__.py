"""The Detect tab (`tab.py`): DETR's boxes and their views (`views`), the attention row (`attention`), the panoptic
Masks view (`masks`) and the set-matching panel (`matching`)."""
