"""Games service: trivia, tic-tac-toe, hangman and guess-the-number on inline keyboards.

The games themselves are plain classes with no bus (:mod:`.tictactoe`,
:mod:`.trivia`, :mod:`.hangman`, :mod:`.guess`); :mod:`.protocol` is the
compact callback-data format; :mod:`.engine` validates a press against the
stored state (the server is authoritative) and renders boards; :mod:`.service`
wires them into the botbus SDK with state in a JetStream KV bucket.
"""
