"""Goals no MT10 model should act on (shared by the unit and DDS tests of goal understanding)."""

# Not the calibration list the threshold was chosen with: other tasks, chit-chat, gibberish, other languages.
UNRELATED = (
    "make me a coffee", "fold the laundry", "water the plants", "pour me a glass of water", "stack the blocks",
    "turn on the lights", "what is the weather like today", "tell me a joke", "hello, how are you?",
    "good morning", "asdkjh qwe zxc", "lorem ipsum dolor sit amet", "ouvre le tiroir", "öffne die Tür",
    "abre la ventana", "把抽屉打开", "play some music", "call my mother", "sweep the floor", "wash the dishes",
    "cook dinner", "sing a song", "dance for me", "shut down the computer", "book a flight to paris",
    "how old are you", "what time is it", "feed the cat", "write an email", "1234567890", "!!!???",
    "take out the trash", "make the bed", "clean the kitchen", "throw the ball", "walk the dog", "order a pizza",
)
