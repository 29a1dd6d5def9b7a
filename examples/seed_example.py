"""The two snippets of the classic Keras GRU tutorial, run on cgru.

The only change from the Keras version is the import line:

    from keras.models import Sequential        ->  from cgru import Sequential, GRU, Dense
    from keras.layers import GRU, Dense

Run:  python examples/seed_example.py
"""
import numpy as np

from cgru import GRU, Dense, Sequential

# Snippet 1: a GRU layer returning its whole output sequence.
gru_layer = GRU(units=32, return_sequences=True, input_shape=(10, 20))
input_data = np.random.random((1, 10, 20))
output = gru_layer(input_data)
print("GRU output shape:", output.shape)  # (1, 10, 32): batch, time steps, units

# Snippet 2: a binary classifier trained for 10 epochs on NumPy arrays.
# (Random data, as in the tutorial: it shows the API, not a learning result.)
model = Sequential()
model.add(GRU(units=32, input_shape=(10, 20)))
model.add(Dense(units=1, activation='sigmoid'))
model.compile(loss='binary_crossentropy', optimizer='adam', metrics=['accuracy'])

x_train = np.random.random((1000, 10, 20))
y_train = np.random.randint(2, size=(1000, 1))
history = model.fit(x_train, y_train, epochs=10, batch_size=32)

print("epochs trained:", len(history.history["loss"]))
print("predictions shape:", model.predict(x_train[:5]).shape)
