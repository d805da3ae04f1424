"""Guardrails between learning and serving: the promotion gate, the golden set, rollback with
quarantine, and the operator's controls (the non-finite guard lives in ``learners/undo.py``).

The learning model is the *challenger*; the served one is the *champion*, a copy of the learner's
full state at the last promotion. :mod:`.gate` decides, from paired prequential scores and an
optional golden set (:mod:`.golden`), whether a candidate is promoted or held; :mod:`.guardrails`
keeps the champion, the journal of examples learned since, and resets the learner to the champion
on rollback; :mod:`.quarantine` sends the rolled-back examples to the quarantine topic;
:mod:`.operator` names the operator's controls and :mod:`.hooks` wires all of it into the daemon.
(Nothing is imported here: the prediction server imports :mod:`.operator` without torch.)
"""
