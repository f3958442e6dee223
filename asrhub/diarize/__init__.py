"""Who spoke: speaker diarization on the CPU (issue 26).

* :mod:`.encoder` — the speaker encoders (``diarization.encoder``) and each one's tuning;
* :mod:`.campplus` — CAM++ (3D-Speaker's weights, the default) as ONNX, on kaldi-native-fbank
  features; :mod:`.campplus_onnx` builds that graph at set-up (the hub never imports it);
* :mod:`.ge2e` — the GE2E speaker encoder (Resemblyzer's weights) in numpy;
* :mod:`.checkpoint` — torch checkpoints read without torch (a restricted unpickler);
* :mod:`.speech` — where the speech is (webrtcvad, smoothed);
* :mod:`.segmentation` — who speaks in each ~17 ms frame: pyannote segmentation-3.0 (onnxruntime);
* :mod:`.cluster` — agglomerative clustering on cosine distance with an automatic count;
* :mod:`.diarizer` — a file's speaker turns, and one utterance's voices (each embedded);
* :mod:`.tracker` — live labels: each final joins the nearest known speaker or starts a new one;
* :mod:`.assign` — speakers onto a transcription's words and pieces (by time overlap).

A room of the core below the hub: at run time it imports only numpy, scipy, webrtcvad,
onnxruntime, kaldi-native-fbank and the frames (``onnx`` only in the set-up's converter).
"""
