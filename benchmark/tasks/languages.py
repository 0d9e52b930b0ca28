"""The ten natural languages of M3-HumanEval: script, direction, fonts and the two short instructions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["ltr", "rtl"]


@dataclass(frozen=True)
class Language:
    code: str  # BCP-47
    name: str
    script: str  # ISO 15924
    direction: Direction
    image_instruction: str  # the text part of an image task: the statement is in the image
    text_instruction: str  # the text-only variant: the statement follows in text


_FENCE = "```python"

LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language(
            "en", "English", "Latn", "ltr",
            "The image shows a Python programming problem. Implement the function below so that it solves "
            f"the problem in the image. Reply with the complete function in a single {_FENCE} code block.",
            "Implement the function below so that it does what its docstring says. Reply with the complete "
            f"function in a single {_FENCE} code block.",
        ),
        Language(
            "zh", "Chinese", "Hans", "ltr",
            "图片中是一道 Python 编程题。请实现下面的函数，使其解决图片中的问题。"
            f"请在一个 {_FENCE} 代码块中给出完整的函数。",
            f"请实现下面的函数，使其符合文档字符串中的描述。请在一个 {_FENCE} 代码块中给出完整的函数。",
        ),
        Language(
            "ja", "Japanese", "Jpan", "ltr",
            "画像には Python のプログラミング問題が示されています。画像の問題を解くように、下の関数を実装して"
            f"ください。完全な関数を 1 つの {_FENCE} コードブロックで回答してください。",
            "下の関数を、docstring の説明どおりに動作するよう実装してください。完全な関数を 1 つの "
            f"{_FENCE} コードブロックで回答してください。",
        ),
        Language(
            "es", "Spanish", "Latn", "ltr",
            "La imagen muestra un problema de programación en Python. Implementa la función de abajo para "
            f"que resuelva el problema de la imagen. Responde con la función completa en un único bloque de "
            f"código {_FENCE}.",
            "Implementa la función de abajo para que haga lo que describe su docstring. Responde con la "
            f"función completa en un único bloque de código {_FENCE}.",
        ),
        Language(
            "fr", "French", "Latn", "ltr",
            "L'image montre un problème de programmation en Python. Implémentez la fonction ci-dessous pour "
            "qu'elle résolve le problème de l'image. Répondez avec la fonction complète dans un seul bloc de "
            f"code {_FENCE}.",
            "Implémentez la fonction ci-dessous pour qu'elle fasse ce que décrit sa docstring. Répondez avec "
            f"la fonction complète dans un seul bloc de code {_FENCE}.",
        ),
        Language(
            "de", "German", "Latn", "ltr",
            "Das Bild zeigt eine Programmieraufgabe in Python. Implementieren Sie die folgende Funktion so, "
            "dass sie die Aufgabe im Bild löst. Antworten Sie mit der vollständigen Funktion in einem "
            f"einzigen {_FENCE}-Codeblock.",
            "Implementieren Sie die folgende Funktion so, dass sie tut, was ihr Docstring beschreibt. "
            f"Antworten Sie mit der vollständigen Funktion in einem einzigen {_FENCE}-Codeblock.",
        ),
        Language(
            "ru", "Russian", "Cyrl", "ltr",
            "На изображении — задача по программированию на Python. Реализуйте функцию ниже так, чтобы она "
            f"решала задачу с изображения. Ответьте полной функцией в одном блоке кода {_FENCE}.",
            "Реализуйте функцию ниже так, чтобы она делала то, что описано в её docstring. Ответьте полной "
            f"функцией в одном блоке кода {_FENCE}.",
        ),
        Language(
            "ar", "Arabic", "Arab", "rtl",
            "تعرض الصورة مسألة برمجة بلغة Python. اكتب الدالة أدناه بحيث تحل المسألة المعروضة في الصورة. "
            f"أجب بالدالة كاملة في كتلة شيفرة واحدة {_FENCE}.",
            "اكتب الدالة أدناه بحيث تؤدي ما يصفه نص التوثيق الخاص بها. أجب بالدالة كاملة في كتلة شيفرة "
            f"واحدة {_FENCE}.",
        ),
        Language(
            "hi", "Hindi", "Deva", "ltr",
            "चित्र में Python की एक प्रोग्रामिंग समस्या दी गई है। नीचे दिए गए फ़ंक्शन को इस तरह लागू करें कि वह "
            f"चित्र में दी गई समस्या को हल करे। पूरा फ़ंक्शन एक ही {_FENCE} कोड ब्लॉक में लिखकर उत्तर दें।",
            "नीचे दिए गए फ़ंक्शन को इस तरह लागू करें कि वह वही करे जो उसके docstring में बताया गया है। पूरा "
            f"फ़ंक्शन एक ही {_FENCE} कोड ब्लॉक में लिखकर उत्तर दें।",
        ),
        Language(
            "pt", "Portuguese", "Latn", "ltr",
            "A imagem mostra um problema de programação em Python. Implemente a função abaixo para que ela "
            f"resolva o problema da imagem. Responda com a função completa em um único bloco de código "
            f"{_FENCE}.",
            "Implemente a função abaixo para que ela faça o que sua docstring descreve. Responda com a "
            f"função completa em um único bloco de código {_FENCE}.",
        ),
    )
}  # fmt: skip


def language(code: str) -> Language:
    try:
        return LANGUAGES[code]
    except KeyError:
        raise KeyError(f"unknown language {code!r}; known: {', '.join(LANGUAGES)}") from None
